//! Raw HydraHarp T3 records as the instrument streams them, for load generators and benches.
//!
//! `flowdaq bench photons` and the decoder's criterion bench need the same realistic record
//! stream (photons, overflow records, two channels) without a file: this writes it.

/// HydraHarp v2 T3 records (`RecordType::HydraHarpV2T3`, whose `code()` is the message's
/// `meta.record_type`): photons 40 syncs apart on 2 channels with exponential delays, and an
/// overflow record every 1024 syncs, as the instrument writes them.
pub fn hydraharp_t3_records(count: usize) -> Vec<u8> {
    const OVERFLOW: u32 = (1 << 31) | (63 << 25) | 1;
    let mut bytes = Vec::with_capacity(4 * count);
    let mut sync: u32 = 0;
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    while bytes.len() < 4 * count {
        sync += 40;
        if sync >= 1024 {
            sync -= 1024;
            bytes.extend_from_slice(&OVERFLOW.to_le_bytes());
            continue;
        }
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let uniform = ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let dtime = (300.0 - 250.0 * uniform.ln()).min(1_500.0) as u32;
        let channel = (state & 1) as u32;
        let record = (channel << 25) | (dtime << 10) | sync;
        bytes.extend_from_slice(&record.to_le_bytes());
    }
    bytes
}
