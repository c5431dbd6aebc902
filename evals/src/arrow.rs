//! A small reader of Apache Arrow IPC streams (what Hugging Face `datasets` saves as
//! data-*.arrow), for the column types evaluation data uses: strings, integers, booleans, floats,
//! lists and structs, uncompressed, without nulls. Follows the Arrow columnar format
//! specification: a stream of messages (0xFFFFFFFF, metadata length, a flatbuffer `Message`, the
//! body), a Schema first, then RecordBatches whose buffers are laid out field by field, depth
//! first.

use std::path::Path;

use crate::error::{EvalError, Result};

/// One column's values (all record batches concatenated).
#[derive(Clone, Debug, PartialEq)]
pub enum Column {
    Utf8(Vec<String>),
    Int(Vec<i64>),
    Float(Vec<f64>),
    Bool(Vec<bool>),
    /// Row i holds values offsets[i]..offsets[i+1] of the child.
    List(Vec<usize>, Box<Column>),
    Struct(Vec<(String, Column)>),
    Null(usize),
}

impl Column {
    pub fn len(&self) -> usize {
        match self {
            Column::Utf8(v) => v.len(),
            Column::Int(v) => v.len(),
            Column::Float(v) => v.len(),
            Column::Bool(v) => v.len(),
            Column::List(o, _) => o.len().saturating_sub(1),
            Column::Struct(f) => f.first().map_or(0, |(_, c)| c.len()),
            Column::Null(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i` as JSON (lists as arrays, structs as objects).
    pub fn json(&self, i: usize) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Column::Utf8(v) => Value::from(v[i].clone()),
            Column::Int(v) => Value::from(v[i]),
            Column::Float(v) => Value::from(v[i]),
            Column::Bool(v) => Value::from(v[i]),
            Column::List(o, child) => {
                Value::Array((o[i]..o[i + 1]).map(|j| child.json(j)).collect())
            }
            Column::Struct(f) => Value::Object(
                f.iter()
                    .map(|(name, c)| (name.clone(), c.json(i)))
                    .collect(),
            ),
            Column::Null(_) => Value::Null,
        }
    }

    fn append(&mut self, other: Column) -> std::result::Result<(), String> {
        match (self, other) {
            (Column::Utf8(a), Column::Utf8(b)) => a.extend(b),
            (Column::Int(a), Column::Int(b)) => a.extend(b),
            (Column::Float(a), Column::Float(b)) => a.extend(b),
            (Column::Bool(a), Column::Bool(b)) => a.extend(b),
            (Column::Null(a), Column::Null(b)) => *a += b,
            (Column::List(oa, ca), Column::List(ob, cb)) => {
                let base = *oa.last().unwrap_or(&0);
                if oa.is_empty() {
                    oa.push(0);
                }
                oa.extend(ob.iter().skip(1).map(|o| base + o));
                ca.append(*cb)?;
            }
            (Column::Struct(fa), Column::Struct(fb)) => {
                for ((_, a), (_, b)) in fa.iter_mut().zip(fb) {
                    a.append(b)?;
                }
            }
            _ => return Err("record batches disagree on a column's type".into()),
        }
        Ok(())
    }
}

/// A table: named columns of equal length.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub columns: Vec<(String, Column)>,
    pub rows: usize,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    /// Row `i` as a JSON object.
    pub fn row(&self, i: usize) -> serde_json::Value {
        serde_json::Value::Object(
            self.columns
                .iter()
                .map(|(n, c)| (n.clone(), c.json(i)))
                .collect(),
        )
    }
}

/// Reads an Arrow IPC stream file.
pub fn read_file(path: &Path) -> Result<Table> {
    let bytes = std::fs::read(path).map_err(EvalError::io(path))?;
    read_stream(&bytes).map_err(|msg| EvalError::Data {
        path: path.to_owned(),
        msg: format!("Arrow stream: {msg}"),
    })
}

/// The column types this reader knows (the `Type` union of Schema.fbs).
#[derive(Clone, Debug)]
enum Type {
    Null,
    Int { bits: i32, signed: bool },
    Float { precision: i16 },
    Utf8 { large: bool },
    Bool,
    List { large: bool, child: Box<Field> },
    Struct(Vec<Field>),
}

#[derive(Clone, Debug)]
struct Field {
    name: String,
    ty: Type,
}

type R<T> = std::result::Result<T, String>;

pub fn read_stream(b: &[u8]) -> R<Table> {
    let mut at = 0;
    let mut schema: Option<Vec<Field>> = None;
    let mut columns: Option<Vec<Column>> = None;
    let mut rows = 0usize;
    loop {
        let word = |at: usize| -> R<u32> {
            b.get(at..at + 4)
                .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
                .ok_or_else(|| format!("ends inside a message header at byte {at}"))
        };
        if at == b.len() {
            break; // streams may end without the end-of-stream marker
        }
        let mut len = word(at)?;
        at += 4;
        if len == 0xFFFF_FFFF {
            len = word(at)?;
            at += 4;
        }
        if len == 0 {
            break;
        }
        let meta = b
            .get(at..at + len as usize)
            .ok_or_else(|| format!("message at byte {at} ends past the file"))?;
        at += len as usize;
        let fb = Fb { b: meta };
        let msg = fb.root()?;
        let header_type = fb.u8_field(msg, 1)?.unwrap_or(0);
        let header = fb.table_field(msg, 2)?.ok_or("message without a header")?;
        let body_len = fb.i64_field(msg, 3)?.unwrap_or(0);
        let body = b
            .get(at..at + body_len as usize)
            .ok_or_else(|| format!("message body at byte {at} ends past the file"))?;
        at += body_len as usize;
        match header_type {
            1 => schema = Some(parse_schema(&fb, header)?),
            3 => {
                let fields = schema.as_ref().ok_or("record batch before the schema")?;
                let (n, batch) = parse_batch(&fb, header, body, fields)?;
                rows += n;
                match &mut columns {
                    None => columns = Some(batch),
                    Some(cols) => {
                        for (c, new) in cols.iter_mut().zip(batch) {
                            c.append(new)?;
                        }
                    }
                }
            }
            2 => return Err("dictionary-encoded columns are not supported".into()),
            t => return Err(format!("unexpected message type {t}")),
        }
    }
    let fields = schema.ok_or("no schema message")?;
    let columns = match columns {
        Some(c) => c,
        None => fields.iter().map(|f| empty(&f.ty)).collect(),
    };
    Ok(Table {
        columns: fields.into_iter().map(|f| f.name).zip(columns).collect(),
        rows,
    })
}

fn empty(ty: &Type) -> Column {
    match ty {
        Type::Null => Column::Null(0),
        Type::Int { .. } => Column::Int(vec![]),
        Type::Float { .. } => Column::Float(vec![]),
        Type::Utf8 { .. } => Column::Utf8(vec![]),
        Type::Bool => Column::Bool(vec![]),
        Type::List { child, .. } => Column::List(vec![0], Box::new(empty(&child.ty))),
        Type::Struct(f) => {
            Column::Struct(f.iter().map(|f| (f.name.clone(), empty(&f.ty))).collect())
        }
    }
}

fn parse_schema(fb: &Fb, schema: usize) -> R<Vec<Field>> {
    let fields = fb.vector_field(schema, 1)?.ok_or("schema without fields")?;
    (0..fields.1)
        .map(|i| parse_field(fb, fb.table_at(fields.0 + 4 * i)?))
        .collect()
}

fn parse_field(fb: &Fb, f: usize) -> R<Field> {
    let name = fb.string_field(f, 0)?.unwrap_or_default();
    if fb.table_field(f, 4)?.is_some() {
        return Err(format!(
            "column {name:?}: dictionary encoding is not supported"
        ));
    }
    let type_type = fb.u8_field(f, 2)?.unwrap_or(0);
    let t = fb.table_field(f, 3)?;
    let children = match fb.vector_field(f, 5)? {
        Some((pos, n)) => (0..n)
            .map(|i| parse_field(fb, fb.table_at(pos + 4 * i)?))
            .collect::<R<Vec<_>>>()?,
        None => vec![],
    };
    let need = |t: Option<usize>| t.ok_or_else(|| format!("column {name:?}: type table missing"));
    let one_child = |children: Vec<Field>| -> R<Box<Field>> {
        children
            .into_iter()
            .next()
            .map(Box::new)
            .ok_or_else(|| format!("column {name:?}: list without a child"))
    };
    let ty = match type_type {
        1 => Type::Null,
        2 => {
            let t = need(t)?;
            Type::Int {
                bits: fb.i32_field(t, 0)?.unwrap_or(0),
                signed: fb.u8_field(t, 1)?.unwrap_or(0) != 0,
            }
        }
        3 => Type::Float {
            precision: fb.i16_field(need(t)?, 0)?.unwrap_or(0),
        },
        5 => Type::Utf8 { large: false },
        20 => Type::Utf8 { large: true },
        6 => Type::Bool,
        12 => Type::List {
            large: false,
            child: one_child(children)?,
        },
        21 => Type::List {
            large: true,
            child: one_child(children)?,
        },
        13 => Type::Struct(children),
        other => {
            return Err(format!(
                "column {name:?}: Arrow type {other} is not supported"
            ))
        }
    };
    Ok(Field { name, ty })
}

/// Walks a record batch's field nodes and buffers in schema order.
struct Batch<'a> {
    fb: &'a Fb<'a>,
    body: &'a [u8],
    nodes: (usize, usize),
    buffers: (usize, usize),
    next_node: usize,
    next_buffer: usize,
}

impl<'a> Batch<'a> {
    fn node(&mut self, name: &str) -> R<usize> {
        if self.next_node >= self.nodes.1 {
            return Err(format!("column {name:?}: missing field node"));
        }
        let p = self.nodes.0 + 16 * self.next_node;
        self.next_node += 1;
        let len = self.fb.i64_at(p)?;
        let nulls = self.fb.i64_at(p + 8)?;
        if nulls != 0 {
            return Err(format!(
                "column {name:?}: {nulls} null values are not supported"
            ));
        }
        usize::try_from(len).map_err(|_| format!("column {name:?}: negative length"))
    }

    fn buffer(&mut self, name: &str) -> R<&'a [u8]> {
        if self.next_buffer >= self.buffers.1 {
            return Err(format!("column {name:?}: missing buffer"));
        }
        let p = self.buffers.0 + 16 * self.next_buffer;
        self.next_buffer += 1;
        let (off, len) = (self.fb.i64_at(p)?, self.fb.i64_at(p + 8)?);
        let (off, len) = (off as usize, len as usize);
        self.body
            .get(off..off.saturating_add(len))
            .ok_or_else(|| format!("column {name:?}: buffer outside the message body"))
    }

    fn column(&mut self, f: &Field) -> R<Column> {
        let n = self.node(&f.name)?;
        let name = &f.name;
        let fixed = |buf: &[u8], width: usize| -> R<()> {
            if buf.len() < n * width {
                Err(format!("column {name:?}: data buffer too short"))
            } else {
                Ok(())
            }
        };
        Ok(match &f.ty {
            Type::Null => Column::Null(n),
            Type::Int { bits, signed } => {
                self.buffer(name)?; // validity
                let data = self.buffer(name)?;
                let w = (*bits / 8) as usize;
                if ![1, 2, 4, 8].contains(&w) {
                    return Err(format!("column {name:?}: {bits}-bit integers"));
                }
                fixed(data, w)?;
                Column::Int(
                    data.chunks_exact(w)
                        .take(n)
                        .map(|c| {
                            let mut v = [0u8; 8];
                            v[..w].copy_from_slice(c);
                            let u = u64::from_le_bytes(v);
                            let shift = 64 - 8 * w as u32;
                            if *signed {
                                ((u << shift) as i64) >> shift
                            } else {
                                u as i64
                            }
                        })
                        .collect(),
                )
            }
            Type::Float { precision } => {
                self.buffer(name)?;
                let data = self.buffer(name)?;
                match precision {
                    1 => {
                        fixed(data, 4)?;
                        Column::Float(
                            data.chunks_exact(4)
                                .take(n)
                                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                                .collect(),
                        )
                    }
                    2 => {
                        fixed(data, 8)?;
                        Column::Float(
                            data.chunks_exact(8)
                                .take(n)
                                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                                .collect(),
                        )
                    }
                    _ => return Err(format!("column {name:?}: half-precision floats")),
                }
            }
            Type::Bool => {
                self.buffer(name)?;
                let data = self.buffer(name)?;
                if data.len() * 8 < n {
                    return Err(format!("column {name:?}: data buffer too short"));
                }
                Column::Bool((0..n).map(|i| data[i / 8] >> (i % 8) & 1 == 1).collect())
            }
            Type::Utf8 { large } => {
                self.buffer(name)?;
                let offsets = offsets(self.buffer(name)?, n, *large, name)?;
                let data = self.buffer(name)?;
                let strings = offsets
                    .windows(2)
                    .map(|w| {
                        let s = data
                            .get(w[0]..w[1])
                            .ok_or_else(|| format!("column {name:?}: string outside the data"))?;
                        String::from_utf8(s.to_vec())
                            .map_err(|_| format!("column {name:?}: invalid UTF-8"))
                    })
                    .collect::<R<Vec<_>>>()?;
                Column::Utf8(strings)
            }
            Type::List { large, child } => {
                self.buffer(name)?;
                let offsets = offsets(self.buffer(name)?, n, *large, name)?;
                let c = self.column(child)?;
                if offsets.last().copied().unwrap_or(0) > c.len() {
                    return Err(format!("column {name:?}: list offsets past the child"));
                }
                let first = offsets[0];
                Column::List(
                    offsets.iter().map(|o| o - first).collect(),
                    Box::new(slice(c, first)),
                )
            }
            Type::Struct(fields) => {
                self.buffer(name)?;
                let cols = fields
                    .iter()
                    .map(|f| Ok((f.name.clone(), self.column(f)?)))
                    .collect::<R<Vec<_>>>()?;
                Column::Struct(cols)
            }
        })
    }
}

/// Drops the first `n` values of a child column (lists whose offsets do not start at 0).
fn slice(c: Column, n: usize) -> Column {
    if n == 0 {
        return c;
    }
    match c {
        Column::Utf8(v) => Column::Utf8(v[n..].to_vec()),
        Column::Int(v) => Column::Int(v[n..].to_vec()),
        Column::Float(v) => Column::Float(v[n..].to_vec()),
        Column::Bool(v) => Column::Bool(v[n..].to_vec()),
        Column::Null(k) => Column::Null(k - n),
        Column::List(o, child) => Column::List(o[n..].to_vec(), child),
        Column::Struct(f) => Column::Struct(f.into_iter().map(|(k, c)| (k, slice(c, n))).collect()),
    }
}

fn offsets(buf: &[u8], n: usize, large: bool, name: &str) -> R<Vec<usize>> {
    let w = if large { 8 } else { 4 };
    if buf.len() < (n + 1) * w {
        return Err(format!("column {name:?}: offsets buffer too short"));
    }
    let v: Vec<usize> = buf
        .chunks_exact(w)
        .take(n + 1)
        .map(|c| {
            if large {
                i64::from_le_bytes(c.try_into().unwrap()) as usize
            } else {
                i32::from_le_bytes(c.try_into().unwrap()) as usize
            }
        })
        .collect();
    if v.windows(2).any(|w| w[1] < w[0]) {
        return Err(format!("column {name:?}: offsets decrease"));
    }
    Ok(v)
}

fn parse_batch(fb: &Fb, rb: usize, body: &[u8], fields: &[Field]) -> R<(usize, Vec<Column>)> {
    if fb.table_field(rb, 3)?.is_some() {
        return Err("compressed record batches are not supported".into());
    }
    let length = fb.i64_field(rb, 0)?.unwrap_or(0) as usize;
    let mut batch = Batch {
        fb,
        body,
        nodes: fb.vector_field(rb, 1)?.unwrap_or((0, 0)),
        buffers: fb.vector_field(rb, 2)?.unwrap_or((0, 0)),
        next_node: 0,
        next_buffer: 0,
    };
    let cols = fields
        .iter()
        .map(|f| batch.column(f))
        .collect::<R<Vec<_>>>()?;
    if let Some((i, _)) = cols.iter().enumerate().find(|(_, c)| c.len() != length) {
        return Err(format!(
            "column {:?} has {} rows, the batch {length}",
            fields[i].name,
            cols[i].len()
        ));
    }
    Ok((length, cols))
}

/// Just enough of the flatbuffers wire format: tables with vtables, scalars, offsets to tables,
/// strings and vectors, every access bounds-checked.
struct Fb<'a> {
    b: &'a [u8],
}

impl Fb<'_> {
    fn get<const N: usize>(&self, at: usize) -> R<[u8; N]> {
        self.b
            .get(at..at + N)
            .map(|s| s.try_into().unwrap())
            .ok_or_else(|| format!("flatbuffer read past the end at {at}"))
    }

    fn u32_at(&self, at: usize) -> R<usize> {
        Ok(u32::from_le_bytes(self.get(at)?) as usize)
    }

    fn i64_at(&self, at: usize) -> R<i64> {
        Ok(i64::from_le_bytes(self.get(at)?))
    }

    fn root(&self) -> R<usize> {
        self.u32_at(0)
    }

    /// The table an offset at `at` points to.
    fn table_at(&self, at: usize) -> R<usize> {
        Ok(at + self.u32_at(at)?)
    }

    /// Position of field `id` of the table at `t`, if present.
    fn field(&self, t: usize, id: usize) -> R<Option<usize>> {
        let soff = i32::from_le_bytes(self.get(t)?) as i64;
        let vt = usize::try_from(t as i64 - soff).map_err(|_| "bad vtable offset".to_string())?;
        let vt_len = u16::from_le_bytes(self.get(vt)?) as usize;
        if 4 + 2 * id + 2 > vt_len {
            return Ok(None);
        }
        let off = u16::from_le_bytes(self.get(vt + 4 + 2 * id)?) as usize;
        Ok((off != 0).then_some(t + off))
    }

    fn u8_field(&self, t: usize, id: usize) -> R<Option<u8>> {
        self.field(t, id)?
            .map(|p| Ok(self.get::<1>(p)?[0]))
            .transpose()
    }

    fn i16_field(&self, t: usize, id: usize) -> R<Option<i16>> {
        self.field(t, id)?
            .map(|p| Ok(i16::from_le_bytes(self.get(p)?)))
            .transpose()
    }

    fn i32_field(&self, t: usize, id: usize) -> R<Option<i32>> {
        self.field(t, id)?
            .map(|p| Ok(i32::from_le_bytes(self.get(p)?)))
            .transpose()
    }

    fn i64_field(&self, t: usize, id: usize) -> R<Option<i64>> {
        self.field(t, id)?.map(|p| self.i64_at(p)).transpose()
    }

    fn table_field(&self, t: usize, id: usize) -> R<Option<usize>> {
        self.field(t, id)?.map(|p| self.table_at(p)).transpose()
    }

    /// (position of the first element, length) of a vector field.
    fn vector_field(&self, t: usize, id: usize) -> R<Option<(usize, usize)>> {
        self.field(t, id)?
            .map(|p| {
                let v = self.table_at(p)?;
                Ok((v + 4, self.u32_at(v)?))
            })
            .transpose()
    }

    fn string_field(&self, t: usize, id: usize) -> R<Option<String>> {
        self.vector_field(t, id)?
            .map(|(p, n)| {
                let s = self.b.get(p..p + n).ok_or("string past the end")?;
                String::from_utf8(s.to_vec()).map_err(|_| "field name is not UTF-8".to_string())
            })
            .transpose()
    }
}
