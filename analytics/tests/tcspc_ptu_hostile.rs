//! Hostile PicoQuant input: truncated files, wrong magic, absurd header values, records past the
//! end, random bytes. Every case must be a clear error (or a counted invalid record), never a
//! panic, and no allocation may follow an untrusted length.

#[path = "data/tcspc/reference.rs"]
mod reference;

use flowdaq_analytics::tcspc::ptu::{
    parse_phu, tag_type, HeaderLimits, PqHeader, PtuHeader, PtuRecordReader, PHU_MAGIC, PTU_MAGIC,
};
use flowdaq_analytics::tcspc::records::{
    decode_records, DecoderState, PhotonColumns, RecordType, TimeBase,
};
use flowdaq_analytics::tcspc::TcspcError;
use rand::{Rng, SeedableRng};

fn tag(name: &str, index: i32, typ: u32, value: i64) -> Vec<u8> {
    let mut v = vec![0u8; 32];
    v[..name.len()].copy_from_slice(name.as_bytes());
    v.extend(index.to_le_bytes());
    v.extend(typ.to_le_bytes());
    v.extend(value.to_le_bytes());
    v
}

fn float(name: &str, v: f64) -> Vec<u8> {
    tag(
        name,
        -1,
        tag_type::FLOAT8,
        i64::from_le_bytes(v.to_le_bytes()),
    )
}

fn file(tags: &[Vec<u8>], records: &[u32]) -> Vec<u8> {
    let mut v = PTU_MAGIC.to_vec();
    v.extend(b"1.0.00\0\0");
    for t in tags {
        v.extend(t);
    }
    v.extend(tag("Header_End", -1, tag_type::EMPTY8, 0));
    for r in records {
        v.extend(r.to_le_bytes());
    }
    v
}

fn good_tags(records: i64) -> Vec<Vec<u8>> {
    vec![
        tag(
            "TTResultFormat_TTTRRecType",
            -1,
            tag_type::INT8,
            0x0001_0303,
        ),
        tag("TTResultFormat_BitsPerRecord", -1, tag_type::INT8, 32),
        tag("TTResult_NumberOfRecords", -1, tag_type::INT8, records),
        float("MeasDesc_GlobalResolution", 12.5e-9),
        float("MeasDesc_Resolution", 4e-12),
    ]
}

fn with(mut tags: Vec<Vec<u8>>, replace: Vec<u8>) -> Vec<Vec<u8>> {
    let name = &replace[..32];
    tags.retain(|t| &t[..32] != name);
    tags.push(replace);
    tags
}

fn header_err(bytes: &[u8]) -> TcspcError {
    match PtuHeader::parse(bytes) {
        Ok(h) => panic!("accepted: {h:?}"),
        Err(e) => e,
    }
}

#[test]
fn wrong_magic_and_empty_input() {
    assert!(matches!(header_err(b""), TcspcError::Truncated(_)));
    assert!(matches!(header_err(b"PQTT"), TcspcError::Truncated(_)));
    let mut phu = file(&good_tags(0), &[]);
    phu[..8].copy_from_slice(PHU_MAGIC);
    let e = header_err(&phu);
    assert!(
        matches!(
            e,
            TcspcError::BadMagic {
                expected: "PTU",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("PQHISTO"));
    assert!(matches!(
        header_err(b"\x89PNG\r\n\x1a\n and more"),
        TcspcError::BadMagic { .. }
    ));
}

#[test]
fn every_truncation_of_a_header_is_an_error() {
    let full = file(&good_tags(2), &[]);
    for cut in 0..full.len() {
        assert!(
            matches!(header_err(&full[..cut]), TcspcError::Truncated(_)),
            "cut at {cut}"
        );
    }
    assert!(PtuHeader::parse(&full).is_ok());
    // The same on a real instrument header.
    let real = std::fs::read(reference::real_tcspc_dir().join("picoharp_t3_hazelnut_z1.ptu"))
        .expect("real PTU file");
    let len = PtuHeader::parse(&real).unwrap().header_len_bytes as usize;
    for cut in (0..len).step_by(7) {
        assert!(PtuHeader::parse(&real[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn absurd_header_values_are_rejected() {
    let huge_string = with(
        good_tags(0),
        tag("File_Comment", -1, tag_type::ANSI_STRING, i64::MAX),
    );
    assert!(matches!(
        header_err(&file(&huge_string, &[])),
        TcspcError::InvalidHeader(_)
    ));
    let negative_string = with(
        good_tags(0),
        tag("File_Comment", -1, tag_type::WIDE_STRING, -8),
    );
    assert!(matches!(
        header_err(&file(&negative_string, &[])),
        TcspcError::InvalidHeader(_)
    ));
    // 10 MiB is under the cap, but only a few bytes follow: truncated, and nothing large is
    // allocated (the value buffer grows only with bytes actually read).
    let lying_blob = with(
        good_tags(0),
        tag("Blob", -1, tag_type::BINARY_BLOB, 10 << 20),
    );
    assert!(matches!(
        header_err(&file(&lying_blob, &[])),
        TcspcError::Truncated(_)
    ));
    let unknown_type = with(good_tags(0), tag("Weird", -1, 0x1234_5678, 0));
    assert!(matches!(
        header_err(&file(&unknown_type, &[])),
        TcspcError::InvalidHeader(_)
    ));
    let unknown_record = with(
        good_tags(0),
        tag(
            "TTResultFormat_TTTRRecType",
            -1,
            tag_type::INT8,
            0x0001_0399,
        ),
    );
    assert!(matches!(
        header_err(&file(&unknown_record, &[])),
        TcspcError::UnknownRecordType(0x0001_0399)
    ));
    let huge_record = with(
        good_tags(0),
        tag("TTResultFormat_TTTRRecType", -1, tag_type::INT8, i64::MAX),
    );
    assert!(header_err(&file(&huge_record, &[]))
        .to_string()
        .contains("record type"));
    let no_record: Vec<Vec<u8>> = good_tags(0).into_iter().skip(1).collect();
    assert!(matches!(
        header_err(&file(&no_record, &[])),
        TcspcError::InvalidHeader(_)
    ));
    let bits = with(
        good_tags(0),
        tag("TTResultFormat_BitsPerRecord", -1, tag_type::INT8, 64),
    );
    assert!(matches!(
        header_err(&file(&bits, &[])),
        TcspcError::InvalidHeader(_)
    ));
    let negative_count = with(
        good_tags(0),
        tag("TTResult_NumberOfRecords", -1, tag_type::INT8, -5),
    );
    assert!(matches!(
        header_err(&file(&negative_count, &[])),
        TcspcError::InvalidHeader(_)
    ));
    for bad in [f64::NAN, 0.0, -1e-9, f64::INFINITY, 1e300] {
        let t = with(good_tags(0), float("MeasDesc_GlobalResolution", bad));
        assert!(
            matches!(header_err(&file(&t, &[])), TcspcError::InvalidHeader(_)),
            "{bad}"
        );
        let t = with(good_tags(0), float("MeasDesc_Resolution", bad));
        assert!(
            matches!(header_err(&file(&t, &[])), TcspcError::InvalidHeader(_)),
            "{bad}"
        );
    }
    // A header that never ends is capped by the tag limit.
    let mut endless = PTU_MAGIC.to_vec();
    endless.extend(b"1.0.00\0\0");
    for _ in 0..200 {
        endless.extend(tag("Filler", -1, tag_type::INT8, 1));
    }
    let limits = HeaderLimits {
        max_tags: 100,
        ..HeaderLimits::default()
    };
    let e = PqHeader::read(&mut &endless[..], PTU_MAGIC, "PTU", &limits).unwrap_err();
    assert!(matches!(e, TcspcError::InvalidHeader(_)), "{e}");
    let limits = HeaderLimits {
        max_header_bytes: 1000,
        ..HeaderLimits::default()
    };
    let big = with(
        good_tags(0),
        tag("File_Comment", -1, tag_type::ANSI_STRING, 4096),
    );
    let mut bytes = file(&big, &[]);
    bytes.extend(vec![b'x'; 4096]);
    assert!(matches!(
        PqHeader::read(&mut &bytes[..], PTU_MAGIC, "PTU", &limits),
        Err(TcspcError::InvalidHeader(_))
    ));
}

#[test]
fn records_past_the_end_are_reported() {
    // The header promises a billion records; three are there. Memory stays one chunk.
    let bytes = file(
        &good_tags(1_000_000_000),
        &[0x1000_0001, 0x1000_0002, 0x1000_0003],
    );
    let mut reader = PtuRecordReader::new(&bytes[..], 1024).unwrap();
    let mut out = PhotonColumns::default();
    let e = reader.decode_next_chunk(&mut out).unwrap_err();
    assert!(
        e.to_string()
            .contains("declares 1000000000 records, input holds 3"),
        "{e}"
    );
    // Truncated inside a record.
    let mut cut = file(&good_tags(3), &[1, 2, 3]);
    cut.truncate(cut.len() - 2);
    let mut reader = PtuRecordReader::new(&cut[..], 1).unwrap();
    assert!(reader.next_chunk().unwrap().is_some());
    assert!(reader.next_chunk().unwrap().is_some());
    assert!(matches!(reader.next_chunk(), Err(TcspcError::Truncated(_))));
    assert!(
        reader.next_chunk().unwrap().is_none(),
        "stays finished after an error"
    );
    assert!(PtuRecordReader::new(&cut[..], 0).is_err());
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let good = file(&good_tags(8), &[0x1000_0001; 8]);
    for round in 0..3000 {
        let mut bytes = good.clone();
        // Flip a few random bytes (header and records), sometimes truncate.
        for _ in 0..rng.random_range(1..6) {
            let i = rng.random_range(0..bytes.len());
            bytes[i] = rng.random();
        }
        if round % 3 == 0 {
            bytes.truncate(rng.random_range(0..bytes.len()));
        }
        if let Ok(mut reader) = PtuRecordReader::new(&bytes[..], 3) {
            let mut out = PhotonColumns::default();
            for _ in 0..10 {
                match reader.decode_next_chunk(&mut out) {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let _ = parse_phu(&bytes, &HeaderLimits::default());
    }
    // Pure noise decoded as every record type: every record is accounted for exactly once.
    let noise: Vec<u8> = (0..40_000).map(|_| rng.random()).collect();
    for rt in RecordType::ALL {
        let mut out = PhotonColumns::default();
        let c = decode_records(
            rt,
            TimeBase {
                macro_unit_ps: 1.0,
                micro_bin_ps: 1.0,
            },
            &noise,
            &mut DecoderState::default(),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            c.photons + c.markers + c.overflows + c.syncs + c.invalid,
            c.records,
            "{rt:?}"
        );
        assert_eq!(out.len() as u64, c.photons + c.markers + c.syncs);
    }
}

#[test]
fn hostile_phu_curves() {
    let phu = |tags: Vec<Vec<u8>>, data: &[u8]| {
        let mut v = PHU_MAGIC.to_vec();
        v.extend(b"1.1.00\0\0");
        for t in tags {
            v.extend(t);
        }
        v.extend(tag("Header_End", -1, tag_type::EMPTY8, 0));
        v.extend(data);
        v
    };
    let curve = |offset: i64, bins: i64| {
        vec![
            tag("HistoResult_NumberOfCurves", -1, tag_type::INT8, 1),
            tag("HistResDscr_DataOffset", 0, tag_type::INT8, offset),
            tag("HistResDscr_HistogramBins", 0, tag_type::INT8, bins),
        ]
    };
    let l = HeaderLimits::default();
    assert!(matches!(
        parse_phu(&phu(curve(0, i64::MAX), &[]), &l),
        Err(TcspcError::Truncated(_))
    ));
    assert!(matches!(
        parse_phu(&phu(curve(i64::MAX, 4), &[]), &l),
        Err(TcspcError::Truncated(_))
    ));
    assert!(matches!(
        parse_phu(&phu(curve(-4, 4), &[]), &l),
        Err(TcspcError::InvalidHeader(_))
    ));
    assert!(matches!(
        parse_phu(&phu(curve(1 << 40, 1), &[0; 64]), &l),
        Err(TcspcError::Truncated(_))
    ));
    let mut no_offset = curve(0, 1);
    no_offset.remove(1);
    assert!(matches!(
        parse_phu(&phu(no_offset, &[]), &l),
        Err(TcspcError::InvalidHeader(_))
    ));
    let many = vec![tag(
        "HistoResult_NumberOfCurves",
        -1,
        tag_type::INT8,
        1 << 40,
    )];
    assert!(matches!(
        parse_phu(&phu(many, &[]), &l),
        Err(TcspcError::InvalidHeader(_))
    ));
    // A valid curve at the very end of the file.
    let ok = phu(curve(0, 0), &[]);
    let offset = ok.len() as i64;
    let ok = phu(curve(offset, 2), &[1, 0, 0, 0, 2, 0, 0, 0]);
    assert_eq!(parse_phu(&ok, &l).unwrap().curves[0].counts, vec![1, 2]);
}
