//! The GGUF container on synthetic files: round trips, HF conversion (names, llama's Q/K
//! un-permutation, config), the metadata tokenizer, and corrupt files (typed errors, no panic,
//! no huge allocation).

mod gguf_common;

use bridge_core::{BridgeError, TextCodec};
use bridge_models::gguf::{GgmlType, GgufFile, MetaValue, open_gguf};
use bridge_models::tokenizer::HfCodec;
use gguf_common::{GgufWriter, Kv, byte_alphabet, write_temp};

fn seq(n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| i as f32 * scale).collect()
}

/// A 2-layer llama (hidden 8, 2 heads of 4, 1 KV head, ffn 12, vocab 300) with a byte-level
/// tokenizer and a chat template; every weight is a ramp so that layouts are checkable.
fn tiny_llama(arch: &str) -> GgufWriter {
    let (h, ffn, vocab, kv) = (8usize, 12usize, 300usize, 4usize);
    let alphabet = byte_alphabet();
    let mut tokens: Vec<String> = alphabet.iter().map(|c| c.to_string()).collect();
    tokens.extend(["he", "ll", "hell", "hello", "\u{120}w"].map(String::from));
    let merges: Vec<String> = ["h e", "l l", "he ll", "hell o", "\u{120} w"].map(String::from).to_vec();
    let n_regular = tokens.len();
    tokens.extend(["<|im_start|>", "<|im_end|>", "<tool>"].map(String::from));
    while tokens.len() < vocab {
        tokens.push(format!("[PAD{}]", tokens.len()));
    }
    let mut types = vec![1i32; vocab];
    types[n_regular] = 3;
    types[n_regular + 1] = 3;
    types[n_regular + 2] = 4;
    for t in types.iter_mut().skip(n_regular + 3) {
        *t = 5;
    }
    let template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}\
                    {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    let mut w = GgufWriter::new()
        .kv("general.architecture", Kv::Str(arch.into()))
        .kv("general.name", Kv::Str("tiny".into()))
        .kv(&format!("{arch}.block_count"), Kv::U32(2))
        .kv(&format!("{arch}.context_length"), Kv::U32(64))
        .kv(&format!("{arch}.embedding_length"), Kv::U32(h as u32))
        .kv(&format!("{arch}.feed_forward_length"), Kv::U32(ffn as u32))
        .kv(&format!("{arch}.attention.head_count"), Kv::U32(2))
        .kv(&format!("{arch}.attention.head_count_kv"), Kv::U32(1))
        .kv(&format!("{arch}.rope.freq_base"), Kv::F32(10000.0))
        .kv(&format!("{arch}.attention.layer_norm_rms_epsilon"), Kv::F32(1e-5))
        .kv("tokenizer.ggml.model", Kv::Str("gpt2".into()))
        .kv("tokenizer.ggml.pre", Kv::Str("smollm".into()))
        .kv("tokenizer.ggml.tokens", Kv::Strs(tokens))
        .kv("tokenizer.ggml.token_type", Kv::I32s(types))
        .kv("tokenizer.ggml.merges", Kv::Strs(merges))
        .kv("tokenizer.ggml.bos_token_id", Kv::U32(n_regular as u32))
        .kv("tokenizer.ggml.eos_token_id", Kv::U32(n_regular as u32 + 1))
        .kv("tokenizer.chat_template", Kv::Str(template.into()))
        .f32_tensor("token_embd.weight", &[vocab, h], &seq(vocab * h, 1e-3))
        .f32_tensor("output_norm.weight", &[h], &[1.0; 8]);
    for l in 0..2 {
        let p = format!("blk.{l}");
        w = w
            .f32_tensor(&format!("{p}.attn_norm.weight"), &[h], &[1.0; 8])
            .f32_tensor(&format!("{p}.ffn_norm.weight"), &[h], &[1.0; 8])
            .f32_tensor(&format!("{p}.attn_q.weight"), &[h, h], &seq(h * h, 1.0))
            .f32_tensor(&format!("{p}.attn_k.weight"), &[kv, h], &seq(kv * h, 1.0))
            .f32_tensor(&format!("{p}.attn_v.weight"), &[kv, h], &seq(kv * h, 0.5))
            .f32_tensor(&format!("{p}.attn_output.weight"), &[h, h], &seq(h * h, 0.25))
            .f32_tensor(&format!("{p}.ffn_gate.weight"), &[ffn, h], &seq(ffn * h, 0.1))
            .f32_tensor(&format!("{p}.ffn_up.weight"), &[ffn, h], &seq(ffn * h, 0.2))
            .f32_tensor(&format!("{p}.ffn_down.weight"), &[h, ffn], &seq(ffn * h, 0.3));
        if arch == "qwen2" {
            w = w
                .f32_tensor(&format!("{p}.attn_q.bias"), &[h], &seq(h, 1.0))
                .f32_tensor(&format!("{p}.attn_k.bias"), &[kv], &seq(kv, 1.0))
                .f32_tensor(&format!("{p}.attn_v.bias"), &[kv], &seq(kv, 1.0));
        }
    }
    w
}

fn weights_err(r: Result<GgufFile, BridgeError>) -> String {
    match r {
        Err(e @ BridgeError::Weights { .. }) => e.to_string(),
        Err(e) => panic!("expected a Weights error, got {e:?}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn metadata_and_tensors_round_trip() {
    let path = tiny_llama("llama")
        .kv("x.u64", Kv::U64(1 << 40))
        .kv("x.neg", Kv::I32(-3))
        .kv("x.flag", Kv::Bool(true))
        .raw_tensor("extra.f16", vec![4], 1, [1.0f32, -2.0, 0.5, 65504.0].iter().flat_map(|&v| half_bits(v)).collect())
        .write("roundtrip");
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.get("llama.block_count").and_then(MetaValue::as_u64), Some(2));
    assert_eq!(f.get("x.u64").and_then(MetaValue::as_u64), Some(1 << 40));
    assert_eq!(f.get("x.neg").and_then(MetaValue::as_i64), Some(-3));
    assert_eq!(f.get("x.neg").and_then(MetaValue::as_u64), None);
    assert_eq!(f.get("x.flag").and_then(MetaValue::as_bool), Some(true));
    let t = f.read_tensor("blk.1.attn_k.weight").unwrap();
    assert_eq!(t.shape, vec![4, 8]);
    assert_eq!(t.data, seq(32, 1.0));
    let info = f.tensor_info("blk.1.attn_k.weight").unwrap();
    assert_eq!((info.dims.clone(), info.ggml_type), (vec![8, 4], GgmlType::F32));
    assert_eq!(f.read_tensor("extra.f16").unwrap().data, vec![1.0, -2.0, 0.5, 65504.0]);
    assert!(matches!(f.read_tensor("nope"), Err(BridgeError::Weights { .. })));
}

fn half_bits(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_bits().to_le_bytes()
}

#[test]
fn llama_converts_to_hf_with_q_and_k_rows_unpermuted() {
    let path = tiny_llama("llama").write("llama");
    let m = open_gguf(&path).unwrap();
    let c = &m.config;
    assert_eq!(c["model_type"], "llama");
    assert_eq!(c["architectures"][0], "LlamaForCausalLM");
    assert_eq!((c["hidden_size"].as_u64(), c["intermediate_size"].as_u64()), (Some(8), Some(12)));
    assert_eq!((c["num_attention_heads"].as_u64(), c["num_key_value_heads"].as_u64()), (Some(2), Some(1)));
    assert_eq!((c["head_dim"].as_u64(), c["num_hidden_layers"].as_u64()), (Some(4), Some(2)));
    assert_eq!(c["rms_norm_eps"].as_f64(), Some(1e-5));
    assert_eq!(c["vocab_size"].as_u64(), Some(300));
    assert_eq!(c["tie_word_embeddings"], true);
    assert_eq!(c["attention_bias"], false);
    assert_eq!(c["max_position_embeddings"].as_u64(), Some(64));
    assert_eq!(c["eos_token_id"].as_u64(), Some(262));
    assert!(bridge_models::DecoderConfig::from_hf_json(c).is_ok());

    let q = &m.tensors["model.layers.0.self_attn.q_proj.weight"];
    assert_eq!(q.shape, vec![8, 8]);
    // head 0 rows (file order 0,1,2,3) become (0,2,1,3): row 1 of HF is file row 2.
    let row = |t: &bridge_models::tensors::HostTensor, r: usize| t.data[r * 8];
    assert_eq!([row(q, 0), row(q, 1), row(q, 2), row(q, 3)], [0.0, 16.0, 8.0, 24.0]);
    assert_eq!([row(q, 4), row(q, 5), row(q, 6), row(q, 7)], [32.0, 48.0, 40.0, 56.0]);
    let k = &m.tensors["model.layers.1.self_attn.k_proj.weight"];
    assert_eq!([row(k, 0), row(k, 1), row(k, 2), row(k, 3)], [0.0, 16.0, 8.0, 24.0]);
    // v, o, mlp are untouched
    assert_eq!(m.tensors["model.layers.0.self_attn.v_proj.weight"].data, seq(32, 0.5));
    assert_eq!(m.tensors["model.layers.0.mlp.down_proj.weight"].shape, vec![8, 12]);
    assert!(m.tensors.contains_key("model.norm.weight") && !m.tensors.contains_key("lm_head.weight"));
    assert_eq!(m.tensors.len(), 2 + 2 * 9);
}

#[test]
fn qwen2_keeps_rows_and_maps_biases() {
    let path = tiny_llama("qwen2").f32_tensor("output.weight", &[300, 8], &seq(2400, 1.0)).write("qwen2");
    let m = open_gguf(&path).unwrap();
    assert_eq!(m.config["model_type"], "qwen2");
    assert_eq!(m.config["attention_bias"], true);
    assert_eq!(m.config["tie_word_embeddings"], false);
    assert_eq!(m.tensors["model.layers.0.self_attn.q_proj.weight"].data, seq(64, 1.0));
    assert_eq!(m.tensors["model.layers.1.self_attn.k_proj.bias"].data, seq(4, 1.0));
    assert_eq!(m.tensors["lm_head.weight"].shape, vec![300, 8]);
}

#[test]
fn tokenizer_and_codec_from_metadata() {
    let path = tiny_llama("llama").write("tok");
    let f = GgufFile::open(&path).unwrap();
    let codec = HfCodec::from_gguf(&f).unwrap();
    let ids = codec.encode("hello world").unwrap();
    // "hello" merges fully; " w" merges to "Ġw"; "orld" stays bytes (a byte's id is its value here).
    assert_eq!(ids, vec![259, 260, u32::from(b'o'), u32::from(b'r'), u32::from(b'l'), u32::from(b'd')]);
    assert_eq!(codec.decode(&ids).unwrap(), "hello world");
    // control tokens are matched whole and skipped when decoding; user-defined ones are kept
    let ids = codec.encode("<|im_start|>hello<tool><|im_end|>").unwrap();
    assert_eq!(ids, vec![261, 259, 263, 262]);
    assert_eq!(codec.decode(&ids).unwrap(), "hello<tool>");
    assert_eq!(codec.eos_token_ids(), &[262]);
    assert_eq!(codec.pad_token_id(), 262);
    assert_eq!(codec.vocab_size(), 300);
    assert!(codec.decode(&[300]).is_err());
    assert_eq!(
        codec.render_prompt("  hi  ").unwrap(),
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
        "the file's template (with `trim`) is used"
    );
    // digits are split individually by the smollm pre-tokenizer
    assert_eq!(codec.encode("12").unwrap().len(), 2);
}

#[test]
fn unsupported_models_are_reported() {
    let w = tiny_llama("gemma");
    let err = open_gguf(w.write("gemma")).unwrap_err().to_string();
    assert!(err.contains("architecture `gemma` is not supported"), "{err}");

    let w = tiny_llama("llama").f32_tensor("rope_freqs.weight", &[2], &[1.0, 1.0]);
    let err = open_gguf(w.write("ropefreqs")).unwrap_err().to_string();
    assert!(err.contains("rope_freqs.weight"), "{err}");

    let mut w = tiny_llama("llama");
    for (k, v) in w.kv.iter_mut() {
        if k == "tokenizer.ggml.model" {
            *v = Kv::Str("llama".into());
        }
    }
    let f = GgufFile::open(w.write("spm")).unwrap();
    let err = f.tokenizer().unwrap_err().to_string();
    assert!(err.contains("tokenizer model `llama` is not supported"), "{err}");
}

#[test]
fn corrupt_headers_are_typed_errors() {
    let good = tiny_llama("llama").bytes();
    let err = weights_err(GgufFile::open(write_temp("magic", b"GGML\x03\0\0\0")));
    assert!(err.contains("not a GGUF file"), "{err}");
    assert!(weights_err(GgufFile::open(write_temp("empty", b""))).contains("not a GGUF file"));

    let mut v1 = good.clone();
    v1[4] = 1;
    assert!(weights_err(GgufFile::open(write_temp("v1", &v1))).contains("version 1"));
    let mut be = good.clone();
    be[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(weights_err(GgufFile::open(write_temp("be", &be))).contains("big-endian"));

    // tensor and metadata counts that cannot fit
    let mut huge = good.clone();
    huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(weights_err(GgufFile::open(write_temp("ntensors", &huge))).contains("tensor count"));
    let mut huge = good.clone();
    huge[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(weights_err(GgufFile::open(write_temp("nkv", &huge))).contains("metadata count"));

    // the first key's string length (bytes 24..32) corrupted to 2^62: no allocation, an error
    let mut huge = good.clone();
    huge[24..32].copy_from_slice(&(1u64 << 62).to_le_bytes());
    let err = weights_err(GgufFile::open(write_temp("strlen", &huge)));
    assert!(err.contains("string length") && err.contains("exceeds"), "{err}");

    // an array whose count is corrupted
    let w = GgufWriter::new().kv("a", Kv::I32s(vec![1, 2, 3]));
    let mut bytes = w.bytes();
    let at = 24 + 8 + 1 + 4 + 4; // key "a", value type, element type
    bytes[at..at + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    assert!(weights_err(GgufFile::open(write_temp("arr", &bytes))).contains("cannot fit"));

    // an unknown value type
    let mut bytes = GgufWriter::new().kv("a", Kv::U32(7)).bytes();
    bytes[24 + 8 + 1] = 99;
    assert!(weights_err(GgufFile::open(write_temp("vtype", &bytes))).contains("unknown value type 99"));
}

#[test]
fn corrupt_tensor_records_are_typed_errors() {
    let one =
        |dims: Vec<u64>, ty: u32, data: Vec<u8>| GgufWriter::new().raw_tensor("blk.0.attn_q.weight", dims, ty, data);

    let err = weights_err(GgufFile::open(one(vec![32], 16, vec![0; 66]).write("iq2")));
    assert!(err.contains("blk.0.attn_q.weight") && err.contains("type id 16"), "{err}");
    let err = weights_err(GgufFile::open(one(vec![31], 8, vec![0; 34]).write("blocklen")));
    assert!(err.contains("not a multiple") && err.contains("Q8_0"), "{err}");
    let err = weights_err(GgufFile::open(one(vec![1 << 40, 1 << 40], 0, vec![0; 4]).write("dims")));
    assert!(err.contains("impossibly large"), "{err}");
    let err = weights_err(GgufFile::open(one(vec![], 0, vec![]).write("nodims")));
    assert!(err.contains("0 dimensions"), "{err}");

    // data past the end of the file (a truncated download)
    let bytes = one(vec![64], 0, vec![0; 256]).bytes();
    let err = weights_err(GgufFile::open(write_temp("trunc", &bytes[..bytes.len() - 1])));
    assert!(err.contains("blk.0.attn_q.weight") && err.contains("past the end"), "{err}");

    // offsets out of range / misaligned
    let w = one(vec![8], 0, vec![0; 32]);
    let mut bytes = w.bytes();
    // magic, version, counts (24) + name (8 + 19) + n_dims (4) + one dim (8) + type (4)
    let off_at = 24 + 8 + 19 + 4 + 8 + 4;
    assert_eq!(bytes[off_at..off_at + 8], [0; 8]);
    bytes[off_at..off_at + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
    assert!(weights_err(GgufFile::open(write_temp("offset", &bytes))).contains("past the end"));
    bytes[off_at..off_at + 8].copy_from_slice(&3u64.to_le_bytes());
    assert!(weights_err(GgufFile::open(write_temp("align", &bytes))).contains("not aligned"));

    let two = one(vec![8], 0, vec![0; 32]).raw_tensor("blk.0.attn_q.weight", vec![8], 0, vec![0; 32]);
    assert!(weights_err(GgufFile::open(two.write("dup"))).contains("appears twice"));
}

#[test]
fn every_truncation_of_a_valid_file_is_an_error_not_a_panic() {
    let bytes = tiny_llama("llama").bytes();
    // header region byte by byte, then the data region coarsely
    let header_end = bytes.len() - 300 * 8 * 4;
    let cuts = (0..header_end.min(20_000)).step_by(7).chain((header_end..bytes.len()).step_by(997));
    for cut in cuts {
        let path = write_temp("cut", &bytes[..cut]);
        match GgufFile::open(&path) {
            Err(BridgeError::Weights { .. }) => {}
            Err(e) => panic!("cut at {cut}: unexpected error kind {e:?}"),
            Ok(_) => panic!("cut at {cut} of {} bytes parsed", bytes.len()),
        }
        let _ = std::fs::remove_file(path);
    }
}

#[test]
fn open_model_reads_gguf_files() {
    let device = burn::tensor::Device::flex();
    let path = tiny_llama("llama").write("open");
    let (cfg, weights) = bridge_models::open_model(&path, &device).unwrap();
    assert_eq!((cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, cfg.head_dim), (8, 2, 300, 4));
    assert!(cfg.tie_word_embeddings);
    let codec = HfCodec::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let model = bridge_models::Decoder::new(cfg, Box::new(codec)).unwrap();
    let ids = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data([[259i64, 260, 111]], &device);
    let logits = model.forward_logits(&weights, None, ids, None).unwrap();
    assert_eq!(logits.dims(), [1, 3, 300]);

    let bytes = tiny_llama("llama").bytes();
    let cut = write_temp("opencut", &bytes[..bytes.len() / 2]);
    assert!(matches!(bridge_models::open_model(&cut, &device), Err(BridgeError::Weights { .. })));
}
