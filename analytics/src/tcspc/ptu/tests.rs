use super::*;

/// Builds one tag entry (and its trailing data for array types).
fn tag(name: &str, index: i32, typ: u32, value: &[u8; 8], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 32];
    v[..name.len()].copy_from_slice(name.as_bytes());
    v.extend(index.to_le_bytes());
    v.extend(typ.to_le_bytes());
    v.extend(value);
    v.extend(data);
    v
}

fn int(name: &str, v: i64) -> Vec<u8> {
    tag(name, -1, tag_type::INT8, &v.to_le_bytes(), &[])
}

fn float(name: &str, v: f64) -> Vec<u8> {
    tag(name, -1, tag_type::FLOAT8, &v.to_le_bytes(), &[])
}

fn end() -> Vec<u8> {
    tag("Header_End", -1, tag_type::EMPTY8, &[0; 8], &[])
}

fn ptu(tags: &[Vec<u8>], records: &[u32]) -> Vec<u8> {
    let mut v = PTU_MAGIC.to_vec();
    v.extend(b"1.0.00\0\0");
    for t in tags {
        v.extend(t);
    }
    v.extend(end());
    for r in records {
        v.extend(r.to_le_bytes());
    }
    v
}

fn basic_tags(records: i64) -> Vec<Vec<u8>> {
    vec![
        int("TTResultFormat_TTTRRecType", 0x0101_0304),
        int("TTResultFormat_BitsPerRecord", 32),
        int("TTResult_NumberOfRecords", records),
        float("MeasDesc_GlobalResolution", 25e-9),
        float("MeasDesc_Resolution", 16e-12),
        int("TTResult_SyncRate", 40_000_000),
        int("Measurement_Mode", 3),
    ]
}

#[test]
fn every_tag_type_parses() {
    let s = b"hello\0\0\0";
    let w: Vec<u8> = "wide\0"
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    let arr: Vec<u8> = [1.5f64, -2.0]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    let mut tags = basic_tags(0);
    tags.extend([
        tag("Empty", -1, tag_type::EMPTY8, &[0; 8], &[]),
        tag("B", -1, tag_type::BOOL8, &1i64.to_le_bytes(), &[]),
        tag("Bits", -1, tag_type::BIT_SET64, &0xF0i64.to_le_bytes(), &[]),
        tag("Col", -1, tag_type::COLOR8, &0x00FF00i64.to_le_bytes(), &[]),
        tag(
            "When",
            -1,
            tag_type::T_DATE_TIME,
            &25_569.5f64.to_le_bytes(),
            &[],
        ),
        tag(
            "Arr",
            -1,
            tag_type::FLOAT8_ARRAY,
            &(arr.len() as i64).to_le_bytes(),
            &arr,
        ),
        tag(
            "S",
            -1,
            tag_type::ANSI_STRING,
            &(s.len() as i64).to_le_bytes(),
            s,
        ),
        tag(
            "W",
            -1,
            tag_type::WIDE_STRING,
            &(w.len() as i64).to_le_bytes(),
            &w,
        ),
        tag(
            "Blob",
            0,
            tag_type::BINARY_BLOB,
            &3i64.to_le_bytes(),
            &[7, 8, 9],
        ),
        tag("Fast_Load_End", -1, tag_type::EMPTY8, &[0; 8], &[]),
    ]);
    let file = ptu(&tags, &[]);
    let h = PtuHeader::parse(&file).unwrap();
    let t = &h.tags;
    assert_eq!(t.get("B", -1), Some(&TagValue::Bool(true)));
    assert_eq!(t.get("Bits", -1), Some(&TagValue::BitSet(0xF0)));
    assert_eq!(t.get("Col", -1), Some(&TagValue::Color(0xFF00)));
    assert_eq!(
        t.get("When", -1).and_then(TagValue::unix_time_s),
        Some(43_200.0)
    );
    assert_eq!(
        t.get("Arr", -1),
        Some(&TagValue::FloatArray(vec![1.5, -2.0]))
    );
    assert_eq!(t.get("S", -1).and_then(TagValue::as_str), Some("hello"));
    assert_eq!(t.get("W", -1).and_then(TagValue::as_str), Some("wide"));
    assert_eq!(t.scalar("Blob"), Some(&TagValue::Blob(vec![7, 8, 9])));
    assert_eq!(t.get("Empty", -1), Some(&TagValue::Empty));
    assert_eq!(h.header_len_bytes, file.len() as u64);
    assert_eq!(h.record_type, RecordType::HydraHarpV2T3);
    assert_eq!(h.sync_rate_hz, Some(40e6));
    assert_eq!(h.bins_per_period(), 1562);
    assert_eq!(t.version, "1.0.00");
}

#[test]
fn reader_streams_chunks_and_detects_truncation() {
    let records: Vec<u32> = (0..10).map(|i| (1 << 25) | (i << 10) | i).collect();
    let file = ptu(&basic_tags(10), &records);
    let mut reader = PtuRecordReader::new(&file[..], 3).unwrap();
    let mut out = PhotonColumns::default();
    let mut chunks = 0;
    while let Some(c) = reader.decode_next_chunk(&mut out).unwrap() {
        assert!(c.records <= 3);
        chunks += 1;
    }
    assert_eq!((chunks, out.len(), reader.records_read()), (4, 10, 10));
    // Declared 12 but only 10 present: the 10 come out, then an error.
    let file = ptu(&basic_tags(12), &records);
    let mut reader = PtuRecordReader::new(&file[..], 4).unwrap();
    let mut got = 0;
    let err = loop {
        match reader.next_chunk() {
            Ok(Some(c)) => got += c.len() / 4,
            Ok(None) => panic!("truncation not reported"),
            Err(e) => break e,
        }
    };
    assert_eq!(got, 8);
    assert!(matches!(err, TcspcError::Truncated(_)), "{err}");
    // Count 0 means "to the end"; a trailing partial record is an error.
    let mut file = ptu(&basic_tags(0), &records);
    let mut reader = PtuRecordReader::new(&file[..], 64).unwrap();
    assert_eq!(reader.next_chunk().unwrap().map(<[u8]>::len), Some(40));
    assert!(reader.next_chunk().unwrap().is_none());
    file.push(1);
    let mut reader = PtuRecordReader::new(&file[..], 64).unwrap();
    assert!(matches!(reader.next_chunk(), Err(TcspcError::Truncated(_))));
}

#[test]
fn phu_curves_parse_and_bad_offsets_fail() {
    let mut tags = vec![
        int("HistoResult_NumberOfCurves", 2),
        float("MeasDesc_Resolution", 4e-12),
    ];
    let header_len = 16 + (tags.len() + 6 + 1) * 48;
    let curves: [&[u32]; 2] = [&[1, 2, 3], &[4, 5]];
    let mut offset = header_len;
    for (i, c) in curves.iter().enumerate() {
        tags.push(tag(
            "HistResDscr_DataOffset",
            i as i32,
            tag_type::INT8,
            &(offset as i64).to_le_bytes(),
            &[],
        ));
        tags.push(tag(
            "HistResDscr_HistogramBins",
            i as i32,
            tag_type::INT8,
            &(c.len() as i64).to_le_bytes(),
            &[],
        ));
        tags.push(tag(
            "HistResDscr_MDescResolution",
            i as i32,
            tag_type::FLOAT8,
            &(8e-12 * (i + 1) as f64).to_le_bytes(),
            &[],
        ));
        offset += 4 * c.len();
    }
    let mut file = PHU_MAGIC.to_vec();
    file.extend(b"1.1.00\0\0");
    for t in &tags {
        file.extend(t);
    }
    file.extend(end());
    assert_eq!(file.len(), header_len);
    for c in curves {
        for v in c {
            file.extend(v.to_le_bytes());
        }
    }
    let phu = parse_phu(&file, &HeaderLimits::default()).unwrap();
    assert_eq!(phu.curves.len(), 2);
    assert_eq!(phu.curves[0].counts, vec![1, 2, 3]);
    assert_eq!(phu.curves[1].counts, vec![4, 5]);
    assert_eq!(phu.curves[1].resolution_s, 16e-12);
    // Drop the last data byte: the second curve now lies past the end.
    assert!(matches!(
        parse_phu(&file[..file.len() - 1], &HeaderLimits::default()),
        Err(TcspcError::Truncated(_))
    ));
    // A PTU magic is not a PHU.
    assert!(matches!(
        parse_phu(&ptu(&basic_tags(0), &[]), &HeaderLimits::default()),
        Err(TcspcError::BadMagic { .. })
    ));
}
