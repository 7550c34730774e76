//! Every dequantiser against gguf-py (`gguf.quants.dequantize`) on random blocks
//! (`fixtures/gguf_quant_blocks.json`, written by `scripts/gguf_reference.py`).

mod gguf_common;

use bridge_models::gguf::{GgmlType, dequantize};

fn type_named(name: &str) -> GgmlType {
    (0..64).filter_map(GgmlType::from_id).find(|t| t.name() == name).unwrap_or_else(|| panic!("no type {name}"))
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn dequantisers_match_gguf_py() {
    let fx = gguf_common::fixture("gguf_quant_blocks.json");
    let blocks = fx["blocks"].as_array().unwrap();
    let mut seen = Vec::new();
    for b in blocks {
        let ty = type_named(b["type"].as_str().unwrap());
        let raw = unhex(b["hex"].as_str().unwrap());
        let want: Vec<f32> = b["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let mut got = vec![0f32; want.len()];
        dequantize(ty, &raw, &mut got).unwrap();
        let mut worst = 0f32;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let err = (g - w).abs();
            assert!(err <= 1e-6 * w.abs().max(1e-3), "{ty} value {i}: got {g}, gguf-py {w}");
            worst = worst.max(err);
        }
        println!("{ty}: {} values, max |Δ| = {worst:e}", want.len());
        seen.push(ty);
    }
    for t in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Bf16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::Q8K,
    ] {
        assert!(seen.contains(&t), "no reference blocks for {t}");
    }
}
