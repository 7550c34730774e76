//! Shared helpers of the GGUF tests: a small GGUF writer, the model cache and the fixtures.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// A metadata value to write.
pub enum Kv {
    U32(u32),
    I32(i32),
    U64(u64),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

/// Writes GGUF v3 files (little-endian) for the tests.
pub struct GgufWriter {
    pub version: u32,
    pub alignment: u64,
    pub kv: Vec<(String, Kv)>,
    /// name, GGUF dims, ggml type id, raw data
    pub tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

impl GgufWriter {
    pub fn new() -> Self {
        Self { version: 3, alignment: 32, kv: Vec::new(), tensors: Vec::new() }
    }

    pub fn kv(mut self, key: &str, v: Kv) -> Self {
        self.kv.push((key.to_owned(), v));
        self
    }

    /// An F32 tensor with HF shape `shape` (row-major), stored with GGUF dims reversed.
    pub fn f32_tensor(mut self, name: &str, shape: &[usize], values: &[f32]) -> Self {
        assert_eq!(shape.iter().product::<usize>(), values.len());
        let dims = shape.iter().rev().map(|&d| d as u64).collect();
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensors.push((name.to_owned(), dims, 0, data));
        self
    }

    pub fn raw_tensor(mut self, name: &str, dims: Vec<u64>, ty: u32, data: Vec<u8>) -> Self {
        self.tensors.push((name.to_owned(), dims, ty, data));
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            put_str(&mut out, k);
            match v {
                Kv::U32(x) => {
                    out.extend(4u32.to_le_bytes());
                    out.extend(x.to_le_bytes());
                }
                Kv::I32(x) => {
                    out.extend(5u32.to_le_bytes());
                    out.extend(x.to_le_bytes());
                }
                Kv::U64(x) => {
                    out.extend(10u32.to_le_bytes());
                    out.extend(x.to_le_bytes());
                }
                Kv::F32(x) => {
                    out.extend(6u32.to_le_bytes());
                    out.extend(x.to_le_bytes());
                }
                Kv::Bool(x) => {
                    out.extend(7u32.to_le_bytes());
                    out.push(u8::from(*x));
                }
                Kv::Str(s) => {
                    out.extend(8u32.to_le_bytes());
                    put_str(&mut out, s);
                }
                Kv::Strs(list) => {
                    out.extend(9u32.to_le_bytes());
                    out.extend(8u32.to_le_bytes());
                    out.extend((list.len() as u64).to_le_bytes());
                    for s in list {
                        put_str(&mut out, s);
                    }
                }
                Kv::I32s(list) => {
                    out.extend(9u32.to_le_bytes());
                    out.extend(5u32.to_le_bytes());
                    out.extend((list.len() as u64).to_le_bytes());
                    for x in list {
                        out.extend(x.to_le_bytes());
                    }
                }
            }
        }
        let a = self.alignment as usize;
        let mut offset = 0usize;
        let mut offsets = Vec::new();
        for (_, _, _, data) in &self.tensors {
            offsets.push(offset);
            offset = (offset + data.len()).div_ceil(a) * a;
        }
        for ((name, dims, ty, _), off) in self.tensors.iter().zip(&offsets) {
            put_str(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.to_le_bytes());
            out.extend((*off as u64).to_le_bytes());
        }
        out.resize(out.len().div_ceil(a) * a, 0);
        let start = out.len();
        for ((_, _, _, data), off) in self.tensors.iter().zip(&offsets) {
            out.resize(start + off, 0);
            out.extend(data);
        }
        out
    }

    /// Writes the file to a fresh temporary path and returns it.
    pub fn write(&self, tag: &str) -> PathBuf {
        write_temp(tag, &self.bytes())
    }
}

/// A fresh path under the system temp dir holding `bytes`.
pub fn write_temp(tag: &str, bytes: &[u8]) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("bridge-gguf-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{tag}-{}.gguf", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// GPT-2's byte alphabet (`bytes_to_unicode`), for building byte-level vocabularies.
pub fn byte_alphabet() -> Vec<char> {
    let mut out = Vec::with_capacity(256);
    let mut next = 256u32;
    for b in 0u32..256 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        if printable {
            out.push(char::from_u32(b).unwrap());
        } else {
            out.push(char::from_u32(next).unwrap());
            next += 1;
        }
    }
    out
}

/// The model cache of `scripts/fetch_models.sh`.
pub fn model_cache() -> PathBuf {
    match std::env::var_os("BRIDGE_MODELS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/bridge-models"),
    }
}

/// The path of cached model `file`, or `None` (with a printed note) when it was not fetched.
pub fn cached_model(file: &str) -> Option<PathBuf> {
    let p = model_cache().join(file);
    if p.is_file() {
        Some(p)
    } else {
        println!("skipped: {} is absent (run bridge-models/scripts/fetch_models.sh --qwen)", p.display());
        None
    }
}

/// A fixture of `bridge-models/fixtures/`.
pub fn fixture(name: &str) -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}
