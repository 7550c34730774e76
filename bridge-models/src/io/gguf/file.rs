//! The GGUF container (versions 2 and 3): header, metadata, tensor-info records, tensor data.
//!
//! Layout (little-endian): magic `GGUF`, `u32` version, `u64` tensor count, `u64` metadata
//! count, the metadata key/value pairs, the tensor-info records (name, dims, type, offset), then
//! the tensor data, starting at the next multiple of `general.alignment` (default 32).
//!
//! Every length read from the file is checked against the bytes the file still has before
//! anything is allocated, so a corrupted count or string length is an error, never a huge
//! allocation or a panic.

use super::quants::{GgmlType, dequantize};
use crate::tensors::HostTensor;
use bridge_core::{BridgeError, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

const MAGIC: [u8; 4] = *b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a ggml tensor has.
const MAX_DIMS: u32 = 4;
/// Deepest nesting of metadata arrays accepted.
const MAX_ARRAY_DEPTH: usize = 4;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    /// `uint8`.
    U8(u8),
    /// `int8`.
    I8(i8),
    /// `uint16`.
    U16(u16),
    /// `int16`.
    I16(i16),
    /// `uint32`.
    U32(u32),
    /// `int32`.
    I32(i32),
    /// `uint64`.
    U64(u64),
    /// `int64`.
    I64(i64),
    /// `float32`.
    F32(f32),
    /// `float64`.
    F64(f64),
    /// `bool`.
    Bool(bool),
    /// UTF-8 `string`.
    String(String),
    /// `array` of values of one type.
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::I8(v) => Some(v.into()),
            Self::I16(v) => Some(v.into()),
            Self::I32(v) => Some(v.into()),
            Self::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value as a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor-info record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The GGUF tensor name (`blk.0.attn_q.weight`, …).
    pub name: String,
    /// Dimensions in GGUF (ggml) order: `dims[0]` is the fastest-varying (the input features of a
    /// linear weight). The row-major (HF) shape is this reversed.
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of values.
    pub fn num_values(&self) -> usize {
        // validated at parse time not to overflow
        self.dims.iter().map(|&d| d as usize).product()
    }

    /// Number of bytes of the stored data.
    pub fn num_bytes(&self) -> usize {
        self.num_values() / self.ggml_type.block_len() * self.ggml_type.block_bytes()
    }

    /// The row-major shape (GGUF dims reversed): `[out, in]` for a linear weight.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed GGUF file: its metadata and tensor directory. Tensor data is read on demand.
#[derive(Clone, Debug)]
pub struct GgufFile {
    path: PathBuf,
    version: u32,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    data_start: u64,
}

/// A reader that knows how many bytes the file has left, so that lengths can be checked before
/// they are allocated.
struct Cursor<R> {
    inner: R,
    pos: u64,
    len: u64,
}

impl<R: Read> Cursor<R> {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> std::result::Result<[u8; N], String> {
        let mut b = [0u8; N];
        self.inner.read_exact(&mut b).map_err(|e| format!("file ends inside {what} at byte {}: {e}", self.pos))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        self.bytes::<4>(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> std::result::Result<u64, String> {
        self.bytes::<8>(what).map(u64::from_le_bytes)
    }

    /// A length-prefixed UTF-8 string.
    fn string(&mut self, what: &str) -> std::result::Result<String, String> {
        let n = self.u64(what)?;
        if n > self.remaining() {
            return Err(format!(
                "{what}: string length {n} at byte {} exceeds the {} bytes left in the file",
                self.pos - 8,
                self.remaining()
            ));
        }
        let mut buf = vec![0u8; n as usize];
        self.inner.read_exact(&mut buf).map_err(|e| format!("file ends inside {what}: {e}"))?;
        self.pos += n;
        String::from_utf8(buf).map_err(|_| format!("{what}: string is not valid UTF-8"))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> std::result::Result<MetaValue, String> {
        Ok(match ty {
            0 => MetaValue::U8(self.bytes::<1>(key)?[0]),
            1 => MetaValue::I8(self.bytes::<1>(key)?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.bytes(key)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.bytes(key)?)),
            4 => MetaValue::U32(self.u32(key)?),
            5 => MetaValue::I32(i32::from_le_bytes(self.bytes(key)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.bytes(key)?)),
            7 => match self.bytes::<1>(key)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(format!("metadata `{key}`: invalid bool byte {b}")),
            },
            8 => MetaValue::String(self.string(key)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(format!("metadata `{key}`: arrays nested deeper than {MAX_ARRAY_DEPTH}"));
                }
                let elem = self.u32(key)?;
                let n = self.u64(key)?;
                // Every element takes at least one byte (strings and arrays at least eight).
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    _ => 8,
                };
                if n.checked_mul(min).is_none_or(|need| need > self.remaining()) {
                    return Err(format!(
                        "metadata `{key}`: array of {n} elements cannot fit in the {} bytes left",
                        self.remaining()
                    ));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64(key)?),
            11 => MetaValue::I64(i64::from_le_bytes(self.bytes(key)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.bytes(key)?)),
            t => return Err(format!("metadata `{key}`: unknown value type {t}")),
        })
    }
}

impl GgufFile {
    /// Parses the header, metadata and tensor directory of the GGUF file at `path`, checking
    /// that every tensor's data lies inside the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| BridgeError::io(path, e))?;
        let len = file.metadata().map_err(|e| BridgeError::io(path, e))?.len();
        let mut cur = Cursor { inner: BufReader::with_capacity(1 << 16, file), pos: 0, len };
        Self::parse(path, &mut cur).map_err(|m| BridgeError::weights(path, m))
    }

    fn parse<R: Read>(path: &Path, cur: &mut Cursor<R>) -> std::result::Result<Self, String> {
        let magic = cur.bytes::<4>("the magic number").map_err(|_| "not a GGUF file (shorter than its magic)")?;
        if magic != MAGIC {
            return Err(format!("not a GGUF file (magic {magic:02x?}, expected \"GGUF\")"));
        }
        let version = cur.u32("the version")?;
        match version {
            2 | 3 => {}
            1 => return Err("GGUF version 1 is not supported (convert the file to v3)".into()),
            v if v.swap_bytes() <= 3 => return Err("big-endian GGUF files are not supported".into()),
            v => return Err(format!("unknown GGUF version {v}")),
        }
        let n_tensors = cur.u64("the tensor count")?;
        let n_kv = cur.u64("the metadata count")?;
        // A key/value pair takes at least 8 + 4 + 1 bytes, a tensor-info record 8 + 4 + 4 + 8.
        if n_kv.checked_mul(13).is_none_or(|n| n > cur.remaining()) {
            return Err(format!("metadata count {n_kv} cannot fit in the file ({} bytes)", cur.len));
        }
        if n_tensors.checked_mul(24).is_none_or(|n| n > cur.remaining()) {
            return Err(format!("tensor count {n_tensors} cannot fit in the file ({} bytes)", cur.len));
        }

        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = cur.string(&format!("metadata key #{i}"))?;
            let ty = cur.u32(&key)?;
            let value = cur.value(ty, &key, 0)?;
            metadata.insert(key, value);
        }

        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut names = std::collections::HashSet::new();
        for i in 0..n_tensors {
            let name = cur.string(&format!("tensor name #{i}"))?;
            let n_dims = cur.u32(&name)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(format!("tensor `{name}`: {n_dims} dimensions (1 to {MAX_DIMS} expected)"));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(cur.u64(&name)?);
            }
            let type_id = cur.u32(&name)?;
            let ggml_type = GgmlType::from_id(type_id)
                .ok_or_else(|| format!("tensor `{name}`: unsupported or unknown ggml type id {type_id}"))?;
            let offset = cur.u64(&name)?;
            // No block type stores more than a few values per byte: anything beyond 8 per byte
            // of the file is corrupt (and would overflow the size computations).
            let values = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
            if values.is_none_or(|n| n > cur.len.saturating_mul(8)) {
                return Err(format!("tensor `{name}`: dimensions {dims:?} are impossibly large"));
            }
            if dims[0] % ggml_type.block_len() as u64 != 0 {
                return Err(format!(
                    "tensor `{name}`: first dimension {} is not a multiple of the {ggml_type} block length {}",
                    dims[0],
                    ggml_type.block_len()
                ));
            }
            if !names.insert(name.clone()) {
                return Err(format!("tensor `{name}` appears twice"));
            }
            tensors.push(TensorInfo { name, dims, ggml_type, offset });
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => v
                .as_u64()
                .filter(|a| *a > 0 && a.is_power_of_two())
                .ok_or_else(|| format!("general.alignment {v:?} is not a power of two"))?,
        };
        let data_start = cur.pos.div_ceil(alignment) * alignment;
        for t in &tensors {
            if t.offset % alignment != 0 {
                return Err(format!("tensor `{}`: offset {} is not aligned to {alignment}", t.name, t.offset));
            }
            let end = data_start.checked_add(t.offset).and_then(|s| s.checked_add(t.num_bytes() as u64));
            if end.is_none_or(|e| e > cur.len) {
                return Err(format!(
                    "tensor `{}`: data [{} + {}, +{} bytes) runs past the end of the file ({} bytes; truncated?)",
                    t.name,
                    data_start,
                    t.offset,
                    t.num_bytes(),
                    cur.len
                ));
            }
        }
        Ok(Self { path: path.to_path_buf(), version, metadata, tensors, data_start })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Every metadata key/value pair.
    pub fn metadata(&self) -> &BTreeMap<String, MetaValue> {
        &self.metadata
    }

    /// One metadata value.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// The tensor directory, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The record of tensor `name`.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// `general.architecture` (`llama`, `qwen2`, …).
    pub fn architecture(&self) -> Result<&str> {
        self.get("general.architecture")
            .and_then(MetaValue::as_str)
            .ok_or_else(|| BridgeError::weights(&self.path, "metadata `general.architecture` is missing"))
    }

    /// The error for a problem with the metadata or a tensor of this file.
    pub(crate) fn error(&self, message: impl Into<String>) -> BridgeError {
        BridgeError::weights(&self.path, message)
    }

    /// Reads and dequantises tensor `name` into a row-major f32 tensor of shape
    /// [`TensorInfo::shape`] (GGUF dims reversed), without renaming or permuting it.
    pub fn read_tensor(&self, name: &str) -> Result<HostTensor> {
        let info = self.tensor_info(name).ok_or_else(|| self.error(format!("no tensor `{name}`")))?;
        let mut file = File::open(&self.path).map_err(|e| BridgeError::io(&self.path, e))?;
        self.read_with(&mut file, info)
    }

    /// Reads every tensor, in file order, handing each to `f` with its record.
    pub fn for_each_tensor(&self, mut f: impl FnMut(&TensorInfo, HostTensor) -> Result<()>) -> Result<()> {
        let mut file = File::open(&self.path).map_err(|e| BridgeError::io(&self.path, e))?;
        for info in &self.tensors {
            let t = self.read_with(&mut file, info)?;
            f(info, t)?;
        }
        Ok(())
    }

    fn read_with(&self, file: &mut File, info: &TensorInfo) -> Result<HostTensor> {
        let name = &info.name;
        let mut raw = vec![0u8; info.num_bytes()];
        file.seek(SeekFrom::Start(self.data_start + info.offset))
            .and_then(|_| file.read_exact(&mut raw))
            .map_err(|e| self.error(format!("tensor `{name}`: reading its {} bytes failed: {e}", raw.len())))?;
        let mut data = vec![0f32; info.num_values()];
        dequantize(info.ggml_type, &raw, &mut data).map_err(|m| self.error(format!("tensor `{name}`: {m}")))?;
        HostTensor::new(info.shape(), data).map_err(|e| self.error(format!("tensor `{name}`: {e}")))
    }
}
