//! Measurement probe, not product code: `bench/hand_loop.py`'s per-event work in Rust.
//!
//! For each input line (one JSON event): parse, route by `event.type`, apply the three
//! connectors' rules of `bench/agent_like.yaml` exactly as `hand_loop.py`'s `_ops`,
//! `_marketing` and `_errors` do (Python dict semantics: assigning an existing key keeps
//! its place, a new key goes last, `pop` closes the gap), and serialize each record as
//! compact JSON plus `\n`, with U+2028/U+2029 written as `\u2028`/`\u2029`.
//!
//! Two parsers, the same rules (instantiated by the `rules!` macro for each):
//! * `dom`: a small hand-written parser into a borrowed, order-keeping tree (strings
//!   without escapes point into the line; objects are vectors of pairs, a duplicate key
//!   keeps its first place and takes the last value, like a Python dict). Numbers are
//!   parsed (i64/u64, or f64 correctly rounded) and written by serde_json's formatter.
//! * `serde`: `serde_json::Value` with `preserve_order` (IndexMap) and `float_roundtrip`.
//!
//! Records are views over the parsed event (no deep copies): a `Node` is either a
//! reference into the parsed value or a small ordered object of nodes.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use std::borrow::Cow;

// ---------------------------------------------------------------- the borrowed tree

pub enum J<'a> {
    Null,
    Bool(bool),
    I(i64),
    U(u64),
    F(f64),
    Str(Cow<'a, str>),
    Array(Vec<J<'a>>),
    Object(JObj<'a>),
}

pub struct JObj<'a>(Vec<(Cow<'a, str>, J<'a>)>);

impl<'a> JObj<'a> {
    fn get(&self, key: &str) -> Option<&J<'a>> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    fn get_key_value(&self, key: &str) -> Option<(&Cow<'a, str>, &J<'a>)> {
        self.0.iter().find(|(k, _)| k == key).map(|(k, v)| (k, v))
    }
    fn contains_key(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }
    fn iter(&self) -> impl Iterator<Item = (&Cow<'a, str>, &J<'a>)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl Serialize for J<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            J::Null => s.serialize_unit(),
            J::Bool(b) => s.serialize_bool(*b),
            J::I(n) => s.serialize_i64(*n),
            J::U(n) => s.serialize_u64(*n),
            J::F(f) => s.serialize_f64(*f),
            J::Str(t) => s.serialize_str(t),
            J::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            J::Object(obj) => {
                let mut m = s.serialize_map(Some(obj.0.len()))?;
                for (k, v) in &obj.0 {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
    }
}

const MAX_DEPTH: usize = 1024;

struct Parser<'a> {
    src: &'a str,
    b: &'a [u8],
    i: usize,
}

type PResult<T> = Result<T, String>;

impl<'a> Parser<'a> {
    fn err<T>(&self, what: &str) -> PResult<T> {
        Err(format!("{what} at byte {}", self.i))
    }
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn value(&mut self, depth: usize) -> PResult<J<'a>> {
        if depth > MAX_DEPTH {
            return self.err("too deep");
        }
        self.ws();
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => Ok(J::Str(self.string()?)),
            Some(b't') => self.literal(b"true", J::Bool(true)),
            Some(b'f') => self.literal(b"false", J::Bool(false)),
            Some(b'n') => self.literal(b"null", J::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => self.err("expected a value"),
        }
    }
    fn literal(&mut self, word: &[u8], value: J<'a>) -> PResult<J<'a>> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(value)
        } else {
            self.err("bad literal")
        }
    }
    fn object(&mut self, depth: usize) -> PResult<J<'a>> {
        self.i += 1;
        let mut items: Vec<(Cow<'a, str>, J<'a>)> = Vec::with_capacity(8);
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(J::Object(JObj(items)));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return self.err("expected a key");
            }
            let key = self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return self.err("expected ':'");
            }
            self.i += 1;
            let value = self.value(depth + 1)?;
            match items.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value, // a Python dict: first place, last value
                None => items.push((key, value)),
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(J::Object(JObj(items)));
                }
                _ => return self.err("expected ',' or '}'"),
            }
        }
    }
    fn array(&mut self, depth: usize) -> PResult<J<'a>> {
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(J::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(J::Array(items));
                }
                _ => return self.err("expected ',' or ']'"),
            }
        }
    }
    fn hex4(&mut self) -> PResult<u32> {
        let Some(digits) = self.b.get(self.i..self.i + 4) else {
            return self.err("short \\u escape");
        };
        let mut n = 0u32;
        for &d in digits {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return self.err("bad \\u escape"),
            };
            n = n * 16 + v as u32;
        }
        self.i += 4;
        Ok(n)
    }
    fn string(&mut self) -> PResult<Cow<'a, str>> {
        self.i += 1; // the opening quote
        let start = self.i;
        let b = self.b;
        while self.i < b.len() && b[self.i] != b'"' && b[self.i] != b'\\' && b[self.i] >= 0x20 {
            self.i += 1;
        }
        match self.peek() {
            Some(b'"') => {
                self.i += 1;
                return Ok(Cow::Borrowed(&self.src[start..self.i - 1]));
            }
            Some(b'\\') => {}
            _ => return self.err("bad string"),
        }
        let mut out = String::with_capacity(self.i - start + 16);
        out.push_str(&self.src[start..self.i]);
        loop {
            let run = self.i;
            while self.i < b.len() && b[self.i] != b'"' && b[self.i] != b'\\' && b[self.i] >= 0x20 {
                self.i += 1;
            }
            out.push_str(&self.src[run..self.i]);
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.i += 1;
                    let Some(e) = self.peek() else { return self.err("bad escape") };
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let mut c = self.hex4()?;
                            if (0xD800..0xDC00).contains(&c) {
                                if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                                    return self.err("lone surrogate");
                                }
                                self.i += 2;
                                let low = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return self.err("lone surrogate");
                                }
                                c = 0x10000 + ((c - 0xD800) << 10) + (low - 0xDC00);
                            } else if (0xDC00..0xE000).contains(&c) {
                                return self.err("lone surrogate");
                            }
                            out.push(char::from_u32(c).ok_or("bad code point")?);
                        }
                        _ => return self.err("bad escape"),
                    }
                }
                _ => return self.err("bad string"),
            }
        }
    }
    fn number(&mut self) -> PResult<J<'a>> {
        let start = self.i;
        let b = self.b;
        let digits = |p: &mut Self| {
            let s = p.i;
            while p.i < b.len() && b[p.i].is_ascii_digit() {
                p.i += 1;
            }
            p.i - s
        };
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return self.err("bad number"),
        }
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.i += 1;
            float = true;
            if digits(self) == 0 {
                return self.err("bad fraction");
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            float = true;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return self.err("bad exponent");
            }
        }
        let text = &self.src[start..self.i];
        if float {
            let f: f64 = text.parse().map_err(|_| format!("bad number at byte {start}"))?;
            if !f.is_finite() {
                return Err(format!("number out of range at byte {start}"));
            }
            Ok(J::F(f))
        } else if let Ok(n) = text.parse::<i64>() {
            Ok(J::I(n))
        } else if let Ok(n) = text.parse::<u64>() {
            Ok(J::U(n))
        } else {
            Err(format!("integer exceeds 64-bit range at byte {start}"))
        }
    }
}

fn parse_dom(line: &[u8]) -> PyResult<J<'_>> {
    let src = std::str::from_utf8(line).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let mut p = Parser { src, b: line, i: 0 };
    let value = p.value(0).map_err(PyValueError::new_err)?;
    p.ws();
    if p.i != line.len() {
        return Err(PyValueError::new_err(format!("trailing data at byte {}", p.i)));
    }
    Ok(value)
}

fn parse_serde(line: &[u8]) -> PyResult<serde_json::Value> {
    serde_json::from_slice(line).map_err(|e| PyValueError::new_err(e.to_string()))
}

// ---------------------------------------------------------------- records

/// Compact JSON + `\n`, with U+2028/U+2029 escaped (the job's contract).
fn write_record(node: &impl Serialize, buf: &mut Vec<u8>) -> PyResult<()> {
    buf.clear();
    serde_json::to_writer(&mut *buf, node).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let is_sep = |w: &[u8]| w[0] == 0xE2 && w[1] == 0x80 && (w[2] == 0xA8 || w[2] == 0xA9);
    if buf.windows(3).any(is_sep) {
        let mut escaped = Vec::with_capacity(buf.len() + 8);
        let mut i = 0;
        while i < buf.len() {
            if i + 2 < buf.len() && is_sep(&buf[i..i + 3]) {
                escaped.extend_from_slice(if buf[i + 2] == 0xA8 { b"\\u2028" } else { b"\\u2029" });
                i += 3;
            } else {
                escaped.push(buf[i]);
                i += 1;
            }
        }
        *buf = escaped;
    }
    buf.push(b'\n');
    Ok(())
}

enum Node<'a, V> {
    Ref(&'a V),
    Obj(Vec<(&'a str, Node<'a, V>)>),
}

impl<V: Serialize> Serialize for Node<'_, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Ref(v) => v.serialize(s),
            Node::Obj(items) => {
                let mut m = s.serialize_map(Some(items.len()))?;
                for (k, v) in items {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
    }
}

/// `obj[key] = node`: in place if present, else appended (a Python dict).
fn set<'a, V>(obj: &mut Vec<(&'a str, Node<'a, V>)>, key: &'a str, node: Node<'a, V>) {
    match obj.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = node,
        None => obj.push((key, node)),
    }
}

/// `obj.pop(key, None)`: removes and closes the gap (a Python dict).
fn pop<'a, V>(obj: &mut Vec<(&'a str, Node<'a, V>)>, key: &str) -> Option<Node<'a, V>> {
    let at = obj.iter().position(|(k, _)| *k == key)?;
    Some(obj.remove(at).1)
}

const OPS: [&str; 5] = ["heartbeat", "error", "buffer_start", "buffer_end", "bitrate_change"];
const MARKETING: [&str; 4] = ["player_ready", "playback_start", "playback_complete", "playback_stop"];
const ERRORS: [&str; 2] = ["error", "buffer_start"];

/// The three connectors' rules over one tree type (`$value` with an `Object($map)`
/// variant and a `String`-like string variant `$str`), as a module `$name`.
macro_rules! rules {
    ($name:ident, $value:ty, $map:ty, $object:path, $str:path, $array:path) => {
        mod $name {
            use super::*;
            type V<'a> = $value;
            type Obj<'a> = Vec<(&'a str, Node<'a, V<'a>>)>;

            fn view<'a>(map: &'a $map) -> Obj<'a> {
                map.iter().map(|(k, v)| (&**k, Node::Ref(v))).collect()
            }

            pub fn ops<'a>(event: &'a $map) -> Node<'a, V<'a>> {
                // metadata allow [device.*, player.*, geo.country_code]; fluxdata deny
                // [playhead_position_sec]; rename session_id -> sid.
                let mut out = view(event);
                match event.get("metadata") {
                    Some($object(md)) => {
                        let mut kept: Obj = Vec::new();
                        for (key, value) in md.iter() {
                            let key: &str = &**key;
                            if key == "device" || key == "player" {
                                kept.push((key, Node::Ref(value)));
                            } else if key == "geo" {
                                if let $object(geo) = value {
                                    if let Some((k, cc)) = geo.get_key_value("country_code") {
                                        kept.push((key, Node::Obj(vec![(&**k, Node::Ref(cc))])));
                                    }
                                }
                            }
                        }
                        set(&mut out, "metadata", Node::Obj(kept));
                    }
                    Some(_) => set(&mut out, "metadata", Node::Obj(Vec::new())),
                    None => {}
                }
                if let Some($object(fd)) = event.get("fluxdata") {
                    if fd.contains_key("playhead_position_sec") {
                        let mut kept = view(fd);
                        pop(&mut kept, "playhead_position_sec");
                        set(&mut out, "fluxdata", Node::Obj(kept));
                    }
                }
                if let Some(sid) = pop(&mut out, "session_id") {
                    set(&mut out, "sid", sid);
                }
                Node::Obj(out)
            }

            pub fn marketing<'a>(event: &'a $map) -> PyResult<Node<'a, V<'a>>> {
                // metadata deny [network, user.id]; fluxdata allow []; rename event.type -> type.
                let mut out = view(event);
                if let Some($object(md)) = event.get("metadata") {
                    let mut kept = view(md);
                    pop(&mut kept, "network");
                    if let Some($object(user)) = md.get("user") {
                        if user.contains_key("id") {
                            let mut u = view(user);
                            pop(&mut u, "id");
                            set(&mut kept, "user", Node::Obj(u));
                        }
                    }
                    set(&mut out, "metadata", Node::Obj(kept));
                }
                if event.contains_key("fluxdata") {
                    set(&mut out, "fluxdata", Node::Obj(Vec::new()));
                }
                let Some($object(body)) = event.get("event") else {
                    return Err(PyValueError::new_err("event is not an object"));
                };
                let mut body = view(body);
                let kind =
                    pop(&mut body, "type").ok_or_else(|| PyValueError::new_err("no event.type"))?;
                set(&mut out, "event", Node::Obj(body));
                set(&mut out, "type", kind);
                Ok(Node::Obj(out))
            }

            pub fn errors<'a>(event: &'a $map) -> Node<'a, V<'a>> {
                // metadata allow [device.type, content.id, error]; fluxdata allow
                // [bandwidth_kbps, num_errors]; rename metadata.error -> error.
                let mut out = view(event);
                let mut kept: Obj = Vec::new();
                if let Some($object(md)) = event.get("metadata") {
                    for (key, value) in md.iter() {
                        let key: &str = &**key;
                        if key == "device" || key == "content" {
                            let leaf = if key == "device" { "type" } else { "id" };
                            if let $object(inner) = value {
                                if let Some((k, v)) = inner.get_key_value(leaf) {
                                    kept.push((key, Node::Obj(vec![(&**k, Node::Ref(v))])));
                                }
                            }
                        } else if key == "error" {
                            kept.push((key, Node::Ref(value)));
                        }
                    }
                }
                let moved = pop(&mut kept, "error");
                if event.contains_key("metadata") {
                    set(&mut out, "metadata", Node::Obj(kept));
                }
                match event.get("fluxdata") {
                    Some($object(fd)) => {
                        let kept: Obj = fd
                            .iter()
                            .filter(|(k, _)| {
                                let k: &str = &***k;
                                k == "bandwidth_kbps" || k == "num_errors"
                            })
                            .map(|(k, v)| (&**k, Node::Ref(v)))
                            .collect();
                        set(&mut out, "fluxdata", Node::Obj(kept));
                    }
                    Some(_) => set(&mut out, "fluxdata", Node::Obj(Vec::new())),
                    None => {}
                }
                if let Some(value) = moved {
                    set(&mut out, "error", value);
                }
                Node::Obj(out)
            }

            /// `event["event"]["type"]` if it is a string; None if not routable (a number,
            /// null, bool: in no route); an error where hand_loop raises.
            pub fn kind<'a>(value: &'a $value) -> PyResult<(&'a $map, Option<&'a str>)> {
                let $object(event) = value else {
                    return Err(PyValueError::new_err("event is not an object"));
                };
                let kind = match event.get("event") {
                    Some($object(body)) => match body.get("type") {
                        Some($str(s)) => Some(&**s),
                        Some($array(_)) | Some($object(_)) => {
                            return Err(PyValueError::new_err("unhashable event.type"));
                        }
                        Some(_) => None,
                        None => return Err(PyValueError::new_err("no event.type")),
                    },
                    _ => return Err(PyValueError::new_err("event.event is not an object")),
                };
                Ok((event, kind))
            }
        }
    };
}

rules!(dom_rules, J<'a>, JObj<'a>, J::Object, J::Str, J::Array);
rules!(
    serde_rules,
    serde_json::Value,
    serde_json::Map<String, serde_json::Value>,
    serde_json::Value::Object,
    serde_json::Value::String,
    serde_json::Value::Array
);

macro_rules! project {
    ($py:expr, $lines:expr, $parse:ident, $rules:ident) => {{
        let py = $py;
        let out = [PyList::empty(py), PyList::empty(py), PyList::empty(py)];
        let mut buf: Vec<u8> = Vec::with_capacity(2048);
        for line in $lines.iter() {
            let line = line.downcast::<PyBytes>()?;
            let value = $parse(line.as_bytes())?;
            let (event, kind) = $rules::kind(&value)?;
            let Some(kind) = kind else { continue };
            if OPS.contains(&kind) {
                write_record(&$rules::ops(event), &mut buf)?;
                out[0].append(PyBytes::new(py, &buf))?;
            }
            if MARKETING.contains(&kind) {
                write_record(&$rules::marketing(event)?, &mut buf)?;
                out[1].append(PyBytes::new(py, &buf))?;
            }
            if ERRORS.contains(&kind) {
                write_record(&$rules::errors(event), &mut buf)?;
                out[2].append(PyBytes::new(py, &buf))?;
            }
        }
        PyTuple::new(py, out)
    }};
}

macro_rules! roundtrip {
    ($py:expr, $lines:expr, $parse:ident) => {{
        let out = PyList::empty($py);
        let mut buf: Vec<u8> = Vec::with_capacity(2048);
        for line in $lines.iter() {
            let line = line.downcast::<PyBytes>()?;
            let value = $parse(line.as_bytes())?;
            write_record(&value, &mut buf)?;
            out.append(PyBytes::new($py, &buf))?;
        }
        Ok(out)
    }};
}

/// Each connector's records for `lines`: `(ops, marketing, errors)`, lists of bytes
/// (hand-written borrowed parser).
#[pyfunction]
fn project_lines<'py>(py: Python<'py>, lines: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyTuple>> {
    project!(py, lines, parse_dom, dom_rules)
}

/// As `project_lines`, parsing with `serde_json::Value` (preserve_order).
#[pyfunction]
fn project_lines_serde<'py>(py: Python<'py>, lines: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyTuple>> {
    project!(py, lines, parse_serde, serde_rules)
}

/// The floor: each line parsed and serialized once, no rules (borrowed parser).
#[pyfunction]
fn roundtrip_lines<'py>(py: Python<'py>, lines: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyList>> {
    roundtrip!(py, lines, parse_dom)
}

/// The floor with `serde_json::Value` (preserve_order).
#[pyfunction]
fn roundtrip_lines_serde<'py>(py: Python<'py>, lines: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyList>> {
    roundtrip!(py, lines, parse_serde)
}

#[pymodule]
fn native_probe(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(project_lines, m)?)?;
    m.add_function(wrap_pyfunction!(project_lines_serde, m)?)?;
    m.add_function(wrap_pyfunction!(roundtrip_lines, m)?)?;
    m.add_function(wrap_pyfunction!(roundtrip_lines_serde, m)?)?;
    Ok(())
}
