//! A GGUF file's header, read on its own and bounded by the file's size before candle reads
//! the file: candle's reader trusts some fields (a `general.alignment` of 0 divides by zero),
//! and a header read here lets every refusal name the tensor at fault.
//!
//! Layout (little-endian; GGUF v1 has 32-bit counts and lengths, v2/v3 64-bit): magic `GGUF`,
//! version, tensor count, metadata count; metadata as key (string), value type (u32), value;
//! tensor infos as name, rank (u32), dimensions (innermost first), GGML type (u32), offset
//! into the data section (u64); the data section starts at the next multiple of the alignment.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::{Error, Result};

/// One tensor as the header describes it.
#[derive(Debug, Clone)]
pub struct RawTensor {
    /// Its name.
    pub name: String,
    /// Its dimensions, outermost first (as candle and safetensors order them).
    pub dims: Vec<u64>,
    /// The GGML type id.
    pub type_id: u32,
    /// Its offset from the start of the data section.
    pub offset: u64,
}

/// What a GGUF header says.
#[derive(Debug, Clone)]
pub struct Header {
    /// `general.architecture`, when present and a string.
    pub architecture: Option<String>,
    /// The tensors, in file order.
    pub tensors: Vec<RawTensor>,
    /// Where the data section starts.
    pub data_offset: u64,
    /// The file's size.
    pub file_size: u64,
}

struct Reader<R> {
    r: R,
    wide: bool,
    file_size: u64,
}

fn bad(msg: String) -> Error {
    Error::Spec(msg)
}

impl<R: Read + Seek> Reader<R> {
    fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        self.r
            .read_exact(&mut b)
            .map_err(|_| bad("ends inside its header".into()))?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        self.r
            .read_exact(&mut b)
            .map_err(|_| bad("ends inside its header".into()))?;
        Ok(u64::from_le_bytes(b))
    }

    fn len(&mut self) -> Result<u64> {
        if self.wide {
            self.u64()
        } else {
            self.u32().map(u64::from)
        }
    }

    fn remaining(&mut self) -> Result<u64> {
        let pos = self.r.stream_position().map_err(|e| bad(e.to_string()))?;
        Ok(self.file_size.saturating_sub(pos))
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        if n > self.remaining()? {
            return Err(bad("ends inside its header".into()));
        }
        let n = i64::try_from(n).map_err(|_| bad("ends inside its header".into()))?;
        self.r
            .seek(SeekFrom::Current(n))
            .map_err(|e| bad(e.to_string()))?;
        Ok(())
    }

    /// A string of at most `max` bytes (a name).
    fn string(&mut self, max: u64) -> Result<String> {
        let n = self.len()?;
        if n > max {
            return Err(bad(format!("has a name of {n} bytes")));
        }
        self.text(n)
    }

    /// The `n` bytes that follow, as text.
    fn text(&mut self, n: u64) -> Result<String> {
        if n > self.remaining()? {
            return Err(bad(format!(
                "has a header string of {n} bytes past its end"
            )));
        }
        let mut v = vec![0u8; n as usize];
        self.r
            .read_exact(&mut v)
            .map_err(|_| bad("ends inside its header".into()))?;
        while v.last() == Some(&0) {
            v.pop();
        }
        Ok(String::from_utf8_lossy(&v).into_owned())
    }

    /// Reads a metadata value of type `t`: integers as `Int`, short strings as `Text`, the
    /// rest skipped.
    fn value(&mut self, t: u32, depth: usize) -> Result<Value> {
        let fixed = |t: u32| match t {
            0 | 1 | 7 => Some(1u64),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        };
        Ok(match t {
            0 | 1 | 7 => Value::Int(self.fixed_int(1)?),
            2 | 3 => Value::Int(self.fixed_int(2)?),
            4 | 5 => Value::Int(self.fixed_int(4)?),
            10 | 11 => Value::Int(self.fixed_int(8)?),
            6 | 12 => {
                self.skip(fixed(t).unwrap_or(0))?;
                Value::Other
            }
            8 => {
                // Long strings (tokenizer data, licences) are skipped, not read into memory.
                let n = self.len()?;
                if n <= 1 << 16 {
                    Value::Text(self.text(n)?)
                } else {
                    self.skip(n)?;
                    Value::Other
                }
            }
            9 if depth < 8 => {
                let inner = self.u32()?;
                let n = self.len()?;
                match fixed(inner) {
                    Some(size) => self.skip(n.saturating_mul(size))?,
                    None => {
                        // Each element takes at least one byte: a count past the end is bad.
                        if n > self.remaining()? {
                            return Err(bad("has a header array past its end".into()));
                        }
                        for _ in 0..n {
                            self.value(inner, depth + 1)?;
                        }
                    }
                }
                Value::Other
            }
            9 => return Err(bad("has header arrays nested more than 8 deep".into())),
            _ => return Err(bad(format!("has a header value of unknown type {t}"))),
        })
    }

    fn fixed_int(&mut self, size: usize) -> Result<u64> {
        let mut b = [0u8; 8];
        self.r
            .read_exact(&mut b[..size])
            .map_err(|_| bad("ends inside its header".into()))?;
        Ok(u64::from_le_bytes(b))
    }
}

enum Value {
    Int(u64),
    Text(String),
    Other,
}

/// Reads the header of the GGUF file `path`; a file that is not GGUF, or whose header runs
/// past its end, is an error (the message continues "`path` …").
pub fn read(path: &Path) -> Result<Header> {
    let shown = path.display();
    let wrap = |e: Error| match e {
        Error::Spec(m) => Error::Spec(format!(
            "`{shown}` {m}: it is truncated or damaged (fetch it again, or re-make it with \
             `steerdiff quantize`)"
        )),
        other => other,
    };
    let file = std::fs::File::open(path)
        .map_err(|e| Error::Spec(format!("cannot read `{shown}`: {e}")))?;
    let file_size = file
        .metadata()
        .map_err(|e| Error::Spec(format!("cannot read `{shown}`: {e}")))?
        .len();
    let mut r = Reader {
        r: BufReader::new(file),
        wide: true,
        file_size,
    };
    let magic = r.u32().ok();
    if magic != Some(0x4655_4747) {
        return Err(Error::Spec(format!(
            "`{shown}` is not a GGUF file (it does not start with `GGUF`)"
        )));
    }
    let version = r.u32().map_err(wrap)?;
    if !(1..=3).contains(&version) {
        return Err(Error::Spec(format!(
            "`{shown}` is GGUF version {version}; steerdiff reads versions 1 to 3"
        )));
    }
    r.wide = version >= 2;
    parse(&mut r).map_err(wrap)
}

fn parse<R: Read + Seek>(r: &mut Reader<R>) -> Result<Header> {
    let n_tensors = r.len()?;
    let n_meta = r.len()?;
    // A metadata entry takes at least 13 bytes, a tensor info at least 24 (v1: 9 and 16).
    if n_meta
        .saturating_mul(9)
        .saturating_add(n_tensors.saturating_mul(16))
        > r.remaining()?
    {
        return Err(bad(format!(
            "declares {n_tensors} tensors and {n_meta} metadata entries, more than it holds"
        )));
    }
    let mut alignment = 32u64;
    let mut architecture = None;
    for _ in 0..n_meta {
        let key = r.string(1 << 16)?;
        let t = r.u32()?;
        match (key.as_str(), r.value(t, 0)?) {
            // As candle reads it: 8/16/32-bit integers, negative ones and others ignored.
            ("general.alignment", Value::Int(a)) => {
                let bits = match t {
                    0 | 1 => 8,
                    2 | 3 => 16,
                    4 | 5 => 32,
                    _ => 0,
                };
                let negative = t % 2 == 1 && bits > 0 && (a >> (bits - 1)) & 1 == 1;
                if bits > 0 && !negative {
                    alignment = a;
                }
            }
            ("general.architecture", Value::Text(a)) => architecture = Some(a),
            _ => {}
        }
    }
    if alignment == 0 || alignment > 1 << 20 {
        return Err(bad(format!("has an alignment of {alignment}")));
    }
    let mut tensors = Vec::with_capacity(n_tensors.min(1 << 16) as usize);
    for _ in 0..n_tensors {
        let name = r.string(1 << 16)?;
        let rank = r.u32()?;
        if rank > 4 {
            return Err(bad(format!("gives tensor `{name}` {rank} dimensions")));
        }
        let mut dims = (0..rank).map(|_| r.len()).collect::<Result<Vec<u64>>>()?;
        dims.reverse();
        let type_id = r.u32()?;
        let offset = r.u64()?;
        tensors.push(RawTensor {
            name,
            dims,
            type_id,
            offset,
        });
    }
    let end = r.r.stream_position().map_err(|e| bad(e.to_string()))?;
    Ok(Header {
        architecture,
        tensors,
        data_offset: end.div_ceil(alignment) * alignment,
        file_size: r.file_size,
    })
}
