//! GGML tensor types and their dequantisation to f32.
//!
//! Each block-quantised type packs `block_len()` values into `block_bytes()` bytes. The layouts
//! and formulas are those of ggml's `ggml-quants.c` (`dequantize_row_*`); every dequantiser here is
//! checked against gguf-py's `gguf.quants.dequantize` on random blocks (see
//! `tests/gguf_quants.rs` and `fixtures/gguf_quant_blocks.json`).

use half::{bf16, f16};

/// Values per super-block of the k-quants.
const QK_K: usize = 256;

/// A GGML tensor element type, as stored in a GGUF tensor-info record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
    /// 64-bit float.
    F64,
    /// 4-bit, one f16 scale per 32 values.
    Q4_0,
    /// 4-bit, f16 scale and minimum per 32 values.
    Q4_1,
    /// 5-bit, one f16 scale per 32 values.
    Q5_0,
    /// 5-bit, f16 scale and minimum per 32 values.
    Q5_1,
    /// 8-bit, one f16 scale per 32 values.
    Q8_0,
    /// 2-bit k-quant (256-value super-blocks).
    Q2K,
    /// 3-bit k-quant.
    Q3K,
    /// 4-bit k-quant.
    Q4K,
    /// 5-bit k-quant.
    Q5K,
    /// 6-bit k-quant.
    Q6K,
    /// 8-bit k-quant (f32 scale).
    Q8K,
    /// 8-bit signed integer.
    I8,
    /// 16-bit signed integer.
    I16,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
}

impl GgmlType {
    /// The type with GGML id `id`, or `None` for ids this crate cannot dequantise (the i-quants,
    /// ternary and MXFP4 types, removed or unknown ids).
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            10 => Self::Q2K,
            11 => Self::Q3K,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            15 => Self::Q8K,
            24 => Self::I8,
            25 => Self::I16,
            26 => Self::I32,
            27 => Self::I64,
            28 => Self::F64,
            30 => Self::Bf16,
            _ => return None,
        })
    }

    /// The GGML id of the type.
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q2K => 10,
            Self::Q3K => 11,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
            Self::Q8K => 15,
            Self::I8 => 24,
            Self::I16 => 25,
            Self::I32 => 26,
            Self::I64 => 27,
            Self::F64 => 28,
            Self::Bf16 => 30,
        }
    }

    /// The name ggml gives the type (`Q4_K`, `BF16`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Bf16 => "BF16",
            Self::F64 => "F64",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q2K => "Q2_K",
            Self::Q3K => "Q3_K",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
            Self::Q8K => "Q8_K",
            Self::I8 => "I8",
            Self::I16 => "I16",
            Self::I32 => "I32",
            Self::I64 => "I64",
        }
    }

    /// Number of values in one block (1 for the plain types).
    pub fn block_len(self) -> usize {
        match self {
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 => 32,
            Self::Q2K | Self::Q3K | Self::Q4K | Self::Q5K | Self::Q6K | Self::Q8K => QK_K,
            _ => 1,
        }
    }

    /// Number of bytes of one block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::F16 | Self::Bf16 | Self::I16 => 2,
            Self::F32 | Self::I32 => 4,
            Self::F64 | Self::I64 => 8,
            Self::Q4_0 => 2 + 16,
            Self::Q4_1 => 2 + 2 + 16,
            Self::Q5_0 => 2 + 4 + 16,
            Self::Q5_1 => 2 + 2 + 4 + 16,
            Self::Q8_0 => 2 + 32,
            Self::Q2K => QK_K / 16 + QK_K / 4 + 2 + 2,
            Self::Q3K => QK_K / 8 + QK_K / 4 + 12 + 2,
            Self::Q4K => 2 + 2 + 12 + QK_K / 2,
            Self::Q5K => 2 + 2 + 12 + QK_K / 8 + QK_K / 2,
            Self::Q6K => QK_K / 2 + QK_K / 4 + QK_K / 16 + 2,
            Self::Q8K => 4 + QK_K + 2 * (QK_K / 16),
        }
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Dequantises `src` (whole blocks of type `ty`) into `dst`, which must hold
/// `src.len() / ty.block_bytes() * ty.block_len()` values.
///
/// Returns a description of the problem when the lengths do not fit; callers turn it into a
/// [`bridge_core::BridgeError::Weights`] naming the file and tensor.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), String> {
    let (bb, bl) = (ty.block_bytes(), ty.block_len());
    if !src.len().is_multiple_of(bb) {
        return Err(format!("{} bytes are not a whole number of {ty} blocks ({bb} bytes each)", src.len()));
    }
    if src.len() / bb * bl != dst.len() {
        return Err(format!("{} bytes of {ty} hold {} values, not {}", src.len(), src.len() / bb * bl, dst.len()));
    }
    let block_fn: fn(&[u8], &mut [f32]) = match ty {
        GgmlType::F32 => |b, y| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => |b, y| y[0] = f16_at(b, 0),
        GgmlType::Bf16 => |b, y| y[0] = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
        GgmlType::F64 => |b, y| y[0] = f64::from_le_bytes(b[..8].try_into().unwrap_or_default()) as f32,
        GgmlType::I8 => |b, y| y[0] = f32::from(b[0] as i8),
        GgmlType::I16 => |b, y| y[0] = f32::from(i16::from_le_bytes([b[0], b[1]])),
        GgmlType::I32 => |b, y| y[0] = i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
        GgmlType::I64 => |b, y| y[0] = i64::from_le_bytes(b[..8].try_into().unwrap_or_default()) as f32,
        GgmlType::Q4_0 => q4_0,
        GgmlType::Q4_1 => q4_1,
        GgmlType::Q5_0 => q5_0,
        GgmlType::Q5_1 => q5_1,
        GgmlType::Q8_0 => q8_0,
        GgmlType::Q2K => q2_k,
        GgmlType::Q3K => q3_k,
        GgmlType::Q4K => q4_k,
        GgmlType::Q5K => q5_k,
        GgmlType::Q6K => q6_k,
        GgmlType::Q8K => q8_k,
    };
    let run = |src: &[u8], dst: &mut [f32]| {
        for (b, y) in src.chunks_exact(bb).zip(dst.chunks_exact_mut(bl)) {
            block_fn(b, y);
        }
    };
    // Large tensors are split over the available cores (block-aligned chunks).
    let blocks = src.len() / bb;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(blocks / 4096).max(1);
    if threads == 1 {
        run(src, dst);
    } else {
        let per = blocks.div_ceil(threads);
        std::thread::scope(|s| {
            for (sc, dc) in src.chunks(per * bb).zip(dst.chunks_mut(per * bl)) {
                s.spawn(move || run(sc, dc));
            }
        });
    }
    Ok(())
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// `block_q4_0 { f16 d; u8 qs[16]; }`: `x = (q − 8)·d`, low nibbles first.
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = (i32::from(qs[j] & 0x0F) - 8) as f32 * d;
        y[j + 16] = (i32::from(qs[j] >> 4) - 8) as f32 * d;
    }
}

/// `block_q4_1 { f16 d, m; u8 qs[16]; }`: `x = q·d + m`.
fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = f32::from(qs[j] & 0x0F) * d + m;
        y[j + 16] = f32::from(qs[j] >> 4) * d + m;
    }
}

/// `block_q5_0 { f16 d; u8 qh[4]; u8 qs[16]; }`: 5th bits in `qh`, `x = (q − 16)·d`.
fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = ((u32::from(qs[j] & 0x0F) | h0) as i32 - 16) as f32 * d;
        y[j + 16] = ((u32::from(qs[j] >> 4) | h1) as i32 - 16) as f32 * d;
    }
}

/// `block_q5_1 { f16 d, m; u8 qh[4]; u8 qs[16]; }`: `x = q·d + m`.
fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = (u32::from(qs[j] & 0x0F) | h0) as f32 * d + m;
        y[j + 16] = (u32::from(qs[j] >> 4) | h1) as f32 * d + m;
    }
}

/// `block_q8_0 { f16 d; i8 qs[32]; }`: `x = q·d`.
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (yi, &q) in y.iter_mut().zip(&b[2..34]) {
        *yi = f32::from(q as i8) * d;
    }
}

/// `block_q2_K { u8 scales[16]; u8 qs[64]; f16 d, dmin; }`.
fn q2_k(b: &[u8], y: &mut [f32]) {
    let scales = &b[0..16];
    let d = f16_at(b, 80);
    let min = f16_at(b, 82);
    let mut out = 0;
    let mut is = 0;
    for n in 0..2 {
        let q = &b[16 + 32 * n..16 + 32 * n + 32];
        for shift in [0u32, 2, 4, 6] {
            for half in 0..2 {
                let sc = scales[is];
                is += 1;
                let dl = d * f32::from(sc & 0x0F);
                let ml = min * f32::from(sc >> 4);
                for &ql in &q[16 * half..16 * half + 16] {
                    y[out] = dl * f32::from((ql >> shift) & 3) - ml;
                    out += 1;
                }
            }
        }
    }
}

/// `block_q3_K { u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d; }`: 6-bit scales packed in 12 bytes.
fn q3_k(b: &[u8], y: &mut [f32]) {
    let hm = &b[0..32];
    let packed = &b[96..108];
    let d_all = f16_at(b, 108);
    // Unpack the sixteen 6-bit scales exactly as ggml's kmask shuffle does.
    let mut scales = [0i32; 16];
    for (i, s) in scales.iter_mut().enumerate() {
        let low = if i < 8 { packed[i] & 0x0F } else { packed[i - 8] >> 4 };
        let high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
        *s = i32::from(low | (high << 4)) - 32;
    }
    let mut out = 0;
    let mut is = 0;
    let mut m = 1u8;
    for n in 0..2 {
        let q = &b[32 + 32 * n..32 + 32 * n + 32];
        for shift in [0u32, 2, 4, 6] {
            for half in 0..2 {
                let dl = d_all * scales[is] as f32;
                is += 1;
                for l in 16 * half..16 * half + 16 {
                    let v = i32::from((q[l] >> shift) & 3) - if hm[l] & m != 0 { 0 } else { 4 };
                    y[out] = dl * v as f32;
                    out += 1;
                }
            }
            m = m.wrapping_shl(1);
        }
    }
}

/// The 6-bit scale and minimum `j` of a Q4_K/Q5_K block (`get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// `block_q4_K { f16 d, dmin; u8 scales[12]; u8 qs[128]; }`.
fn q4_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let min = f16_at(b, 2);
    let scales = &b[4..16];
    for j in 0..4 {
        let q = &b[16 + 32 * j..16 + 32 * j + 32];
        let (sc1, m1) = scale_min_k4(2 * j, scales);
        let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
        let (d1, m1) = (d * f32::from(sc1), min * f32::from(m1));
        let (d2, m2) = (d * f32::from(sc2), min * f32::from(m2));
        let y = &mut y[64 * j..64 * j + 64];
        for l in 0..32 {
            y[l] = d1 * f32::from(q[l] & 0x0F) - m1;
            y[l + 32] = d2 * f32::from(q[l] >> 4) - m2;
        }
    }
}

/// `block_q5_K { f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; }`.
fn q5_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let min = f16_at(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    for j in 0..4 {
        let ql = &b[48 + 32 * j..48 + 32 * j + 32];
        let (sc1, m1) = scale_min_k4(2 * j, scales);
        let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
        let (d1, m1) = (d * f32::from(sc1), min * f32::from(m1));
        let (d2, m2) = (d * f32::from(sc2), min * f32::from(m2));
        let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
        let y = &mut y[64 * j..64 * j + 64];
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[l] = d1 * f32::from((ql[l] & 0x0F) + h1) - m1;
            y[l + 32] = d2 * f32::from((ql[l] >> 4) + h2) - m2;
        }
    }
}

/// `block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d; }`.
fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for n in 0..2 {
        let ql = &b[64 * n..64 * n + 64];
        let qh = &b[128 + 32 * n..128 + 32 * n + 32];
        let sc = &b[192 + 8 * n..192 + 8 * n + 8];
        let y = &mut y[128 * n..128 * n + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = i32::from((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32;
            let q2 = i32::from((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
            let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            let s = |k: usize| d * f32::from(sc[is + k] as i8);
            y[l] = s(0) * q1 as f32;
            y[l + 32] = s(2) * q2 as f32;
            y[l + 64] = s(4) * q3 as f32;
            y[l + 96] = s(6) * q4 as f32;
        }
    }
}

/// `block_q8_K { f32 d; i8 qs[256]; i16 bsums[16]; }`: `x = q·d`.
fn q8_k(b: &[u8], y: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (yi, &q) in y.iter_mut().zip(&b[4..4 + QK_K]) {
        *yi = f32::from(q as i8) * d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_bits().to_le_bytes()
    }

    #[test]
    fn ids_round_trip_and_sizes_match_ggml() {
        for id in 0..64 {
            if let Some(t) = GgmlType::from_id(id) {
                assert_eq!(t.id(), id);
            }
        }
        assert_eq!(GgmlType::from_id(4), None, "Q4_2 was removed from ggml");
        assert_eq!(GgmlType::from_id(16), None, "IQ2_XXS is not supported");
        // sizes from gguf-py's GGML_QUANT_SIZES
        let sizes = [
            (GgmlType::Q4_0, 18),
            (GgmlType::Q4_1, 20),
            (GgmlType::Q5_0, 22),
            (GgmlType::Q5_1, 24),
            (GgmlType::Q8_0, 34),
            (GgmlType::Q2K, 84),
            (GgmlType::Q3K, 110),
            (GgmlType::Q4K, 144),
            (GgmlType::Q5K, 176),
            (GgmlType::Q6K, 210),
            (GgmlType::Q8K, 292),
        ];
        for (t, bytes) in sizes {
            assert_eq!(t.block_bytes(), bytes, "{t}");
        }
    }

    #[test]
    fn q8_0_and_q4_0_by_hand() {
        let mut b = h(0.5).to_vec();
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let mut y = vec![0.0; 32];
        dequantize(GgmlType::Q8_0, &b, &mut y).unwrap();
        assert_eq!(y[0], -8.0);
        assert_eq!(y[31], 7.5);

        let mut b = h(2.0).to_vec();
        b.extend([0x1F; 16]); // low nibble 15, high nibble 1
        dequantize(GgmlType::Q4_0, &b, &mut y).unwrap();
        assert_eq!((y[0], y[16]), (14.0, -14.0));
    }

    #[test]
    fn length_mismatches_are_errors() {
        let mut y = vec![0.0; 32];
        assert!(dequantize(GgmlType::Q8_0, &[0; 33], &mut y).is_err());
        assert!(dequantize(GgmlType::Q8_0, &[0; 68], &mut y).is_err());
        assert!(dequantize(GgmlType::F32, &[0; 127], &mut y).is_err());
    }

    #[test]
    fn threaded_and_serial_paths_agree() {
        // 5000 blocks take the threaded path where there are several cores.
        let n = 5000;
        let src: Vec<u8> = (0..n * 34).map(|i| (i * 7 + i / 34) as u8 & 0x3F).collect();
        let mut y = vec![0.0; n * 32];
        dequantize(GgmlType::Q8_0, &src, &mut y).unwrap();
        let mut serial = vec![0.0; 32];
        for (k, b) in src.chunks_exact(34).enumerate() {
            q8_0(b, &mut serial);
            assert_eq!(&y[32 * k..32 * k + 32], &serial[..]);
        }
    }
}
