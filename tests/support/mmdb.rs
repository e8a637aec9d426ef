//! A minimal MaxMind DB (format 2.0) writer, for tests: one IPv4 network holding one record.
//! Only what the tests need: 24-bit records, maps, arrays, strings, doubles, unsigned ints.

use std::path::Path;

pub enum V {
    Str(String),
    F64(f64),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(Vec<(&'static str, V)>),
    Arr(Vec<V>),
}

fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let (first, extra): (u8, Vec<u8>) = if size < 29 {
        (size as u8, vec![])
    } else if size < 285 {
        (29, vec![(size - 29) as u8])
    } else if size < 65_821 {
        (30, ((size - 285) as u16).to_be_bytes().to_vec())
    } else {
        (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec())
    };
    if kind <= 7 {
        out.push((kind << 5) | first);
    } else {
        // Extended type: type bits 0, then (type - 7) in the next byte.
        out.push(first);
        out.push(kind - 7);
    }
    out.extend(extra);
}

fn minimal(n: u64) -> Vec<u8> {
    let b = n.to_be_bytes();
    let skip = b.iter().take_while(|x| **x == 0).count();
    b[skip..].to_vec()
}

fn encode(v: &V, out: &mut Vec<u8>) {
    match v {
        V::Str(s) => {
            control(out, 2, s.len());
            out.extend(s.as_bytes());
        }
        V::F64(f) => {
            control(out, 3, 8);
            out.extend(f.to_be_bytes());
        }
        V::U16(n) => {
            let b = minimal(u64::from(*n));
            control(out, 5, b.len());
            out.extend(b);
        }
        V::U32(n) => {
            let b = minimal(u64::from(*n));
            control(out, 6, b.len());
            out.extend(b);
        }
        V::U64(n) => {
            let b = minimal(*n);
            control(out, 9, b.len());
            out.extend(b);
        }
        V::Map(kv) => {
            control(out, 7, kv.len());
            for (k, v) in kv {
                encode(&V::Str(k.to_string()), out);
                encode(v, out);
            }
        }
        V::Arr(a) => {
            control(out, 11, a.len());
            for v in a {
                encode(v, out);
            }
        }
    }
}

pub fn s(v: &str) -> V {
    V::Str(v.to_string())
}

/// Write a database of type `db_type` where `net/prefix` (IPv4) maps to `record`.
pub fn write_ipv4(path: &Path, net: [u8; 4], prefix: usize, record: V, db_type: &str) {
    let node_count = prefix;
    let mut tree = Vec::new();
    for i in 0..prefix {
        let bit = (net[i / 8] >> (7 - i % 8)) & 1;
        // The last node points at the record: node_count + 16 + offset 0 in the data section.
        let next = if i + 1 < prefix {
            i + 1
        } else {
            node_count + 16
        } as u32;
        let empty = node_count as u32;
        let (l, r) = if bit == 0 {
            (next, empty)
        } else {
            (empty, next)
        };
        tree.extend(&l.to_be_bytes()[1..]);
        tree.extend(&r.to_be_bytes()[1..]);
    }
    let mut file = tree;
    file.extend([0u8; 16]);
    encode(&record, &mut file);
    file.extend(b"\xAB\xCD\xEFMaxMind.com");
    let meta = V::Map(vec![
        ("binary_format_major_version", V::U16(2)),
        ("binary_format_minor_version", V::U16(0)),
        ("build_epoch", V::U64(1_700_000_000)),
        ("database_type", s(db_type)),
        (
            "description",
            V::Map(vec![("en", s("bigbrotr test database"))]),
        ),
        ("ip_version", V::U16(4)),
        ("languages", V::Arr(vec![s("en")])),
        ("node_count", V::U32(node_count as u32)),
        ("record_size", V::U16(24)),
    ]);
    encode(&meta, &mut file);
    std::fs::write(path, file).expect("write mmdb");
}
