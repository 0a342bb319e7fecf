//! Generates the codec from our message definitions (`defs/*.msg`).
//!
//! Outputs in `OUT_DIR`:
//! - `messages.rs`: one module per message with its structs, `Default`, `decode`, `encode`,
//!   `encoded_size` and `min_size`;
//! - `api.rs`: the `ApiKey` enum with its version table and the `Request`/`Response` enums;
//! - `oracle_glue.rs`: random value generators and per-message round-trip hooks used only by
//!   `tests/oracle_roundtrip.rs` (it is not compiled into the library);
//! - `struct_sizes.rs`: every struct's in-memory size and minimum wire size per version, used
//!   by `tests/hostile_frames.rs` to bound the decoder's memory amplification.
//!
//! The build needs nothing outside this crate: Kafka's JSON specs are not read here.

#[path = "build_support/defs.rs"]
mod defs;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use defs::{is_primitive, snake, CommonDef, FieldDef, MessageDef, Versions};

/// Messages that the oracle crate (kafka-protocol 0.18) does not have; the round-trip test
/// checks them against our own decoder only. The KRaft record messages with a field named
/// `Version` are also excluded: the oracle's generated decoder shadows its `version` parameter
/// with that field's value and then decodes the rest at the wrong version (a bug in
/// kafka-protocol 0.18, not in these definitions).
const NOT_IN_ORACLE: &[&str] = &[
    "ListClientMetricsResourcesRequest",
    "ListClientMetricsResourcesResponse",
    "KRaftVersionRecord",
    "LeaderChangeMessage",
    "SnapshotFooterRecord",
    "SnapshotHeaderRecord",
    "VotersRecord",
];

fn main() {
    if let Err(e) = run() {
        eprintln!("protocol build failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?;
    let out_dir = std::env::var("OUT_DIR").map_err(|e| e.to_string())?;
    let defs_dir = Path::new(&manifest).join("defs");
    println!("cargo:rerun-if-changed=defs");
    println!("cargo:rerun-if-changed=build_support/defs.rs");

    let mut entries: Vec<_> = std::fs::read_dir(&defs_dir)
        .map_err(|e| format!("{}: {e}", defs_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "msg"))
        .collect();
    entries.sort();
    let mut messages = Vec::new();
    for path in &entries {
        let src = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        messages.push(defs::parse(stem, &src)?);
    }
    for m in &mut messages {
        if m.kind == "response" {
            mark_response_records(&mut m.fields);
            for c in &mut m.commons {
                mark_response_records(&mut c.fields);
            }
        }
    }

    let mut code = String::new();
    let mut glue = String::new();
    for m in &messages {
        gen_message(m, &mut code, &mut glue)?;
    }
    gen_cases(&messages, &mut glue);
    let api = gen_api(&messages)?;

    let write = |name: &str, text: &str| {
        std::fs::write(Path::new(&out_dir).join(name), text).map_err(|e| format!("{name}: {e}"))
    };
    write("messages.rs", &code)?;
    write("api.rs", &api)?;
    write("oracle_glue.rs", &glue)?;
    write("struct_sizes.rs", &gen_struct_sizes(&messages)?)?;
    Ok(())
}

/// A `records` field of a response becomes the internal type `response_records`, generated as
/// [`Records`](../src/records.rs): the broker sends record data as a list of pieces (cached
/// buffers, ranges of segment files) that the connection writes without joining them. Request
/// records stay one `Bytes`, a slice of the received frame.
fn mark_response_records(fields: &mut [FieldDef]) {
    for f in fields {
        if f.ty == "records" {
            f.ty = "response_records".to_string();
        }
        mark_response_records(&mut f.fields);
    }
}

// ---------------------------------------------------------------------------------------------
// Model helpers

/// A struct to generate: a message's top level, an inline struct, or a common struct.
struct StructGen<'a> {
    name: String,
    fields: &'a [FieldDef],
    top: bool,
    /// Versions in which the struct can appear on the wire.
    versions: Versions,
}

fn collect_structs<'a>(m: &'a MessageDef) -> Result<Vec<StructGen<'a>>, String> {
    let mut out = vec![StructGen {
        name: m.name.clone(),
        fields: &m.fields,
        top: true,
        versions: m.versions,
    }];
    fn walk<'a>(
        fields: &'a [FieldDef],
        within: Versions,
        out: &mut Vec<StructGen<'a>>,
        m: &MessageDef,
    ) -> Result<(), String> {
        for f in fields {
            if !f.fields.is_empty() {
                let name = elem_type(&f.ty).to_string();
                if out.iter().any(|s| s.name == name) {
                    return Err(format!("{}: struct {name} defined twice", m.name));
                }
                let versions = within.and(&f.versions);
                out.push(StructGen {
                    name,
                    fields: &f.fields,
                    top: false,
                    versions,
                });
                walk(&f.fields, versions, out, m)?;
            }
        }
        Ok(())
    }
    walk(&m.fields, m.versions, &mut out, m)?;
    for c in &m.commons {
        let CommonDef { name, fields, .. } = c;
        // A common struct appears wherever a field of its type exists (a conservative union).
        let mut used = Versions::NONE;
        let mut note = |f: &FieldDef| {
            if elem_type(&f.ty) == name.as_str() && !f.versions.is_empty() {
                used = if used.is_empty() {
                    f.versions
                } else {
                    Versions {
                        min: used.min.min(f.versions.min),
                        max: used.max.max(f.versions.max),
                    }
                };
            }
        };
        fn visit(fields: &[FieldDef], note: &mut dyn FnMut(&FieldDef)) {
            for f in fields {
                note(f);
                visit(&f.fields, note);
            }
        }
        visit(&m.fields, &mut note);
        for other in &m.commons {
            visit(&other.fields, &mut note);
        }
        let versions = m.versions.and(&used);
        out.push(StructGen {
            name: name.clone(),
            fields,
            top: false,
            versions,
        });
        walk(fields, versions, &mut out, m)?;
    }
    Ok(out)
}

fn elem_type(ty: &str) -> &str {
    ty.strip_prefix("[]").unwrap_or(ty)
}

fn is_array(ty: &str) -> bool {
    ty.starts_with("[]")
}

const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut",
    "pub", "ref", "return", "self", "static", "struct", "super", "trait", "true", "try", "type",
    "unsafe", "use", "where", "while", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "typeof", "unsized", "virtual", "yield",
];

fn ident(name: &str) -> String {
    let s = snake(name);
    if KEYWORDS.contains(&s.as_str()) {
        format!("{s}_")
    } else {
        s
    }
}

/// Rust condition testing that `version` lies in `v`.
fn cond(v: &Versions) -> String {
    if v.is_empty() {
        "false".into()
    } else if v.min <= 0 && v.max == i16::MAX {
        "true".into()
    } else if v.max == i16::MAX {
        format!("version >= {}", v.min)
    } else if v.min <= 0 {
        format!("version <= {}", v.max)
    } else if v.min == v.max {
        format!("version == {}", v.min)
    } else {
        format!("(version >= {} && version <= {})", v.min, v.max)
    }
}

/// The versions in which a field is nullable, clipped to those in which it exists.
fn nullable_type(f: &FieldDef) -> bool {
    !f.nullable.and(&f.versions).is_empty()
}

/// Rust condition for a message's valid versions, explicit at both ends (unlike `cond`,
/// whose field conditions may assume the version is already known to be valid).
fn valid_versions(v: &Versions) -> String {
    if v.min == v.max {
        format!("version == {}", v.min)
    } else {
        format!("version >= {} && version <= {}", v.min, v.max)
    }
}

/// True when the field is nullable in every version in which it exists.
fn nullable_everywhere(f: &FieldDef) -> bool {
    f.nullable.min <= f.versions.min && f.nullable.max >= f.versions.max
}

fn compact_expr(f: &FieldDef) -> String {
    match &f.flexible {
        Some(v) => cond(v),
        None => "flexible".into(),
    }
}

fn scalar_rust(ty: &str) -> String {
    match ty {
        "bool" => "bool".into(),
        "int8" => "i8".into(),
        "int16" => "i16".into(),
        "uint16" => "u16".into(),
        "int32" => "i32".into(),
        "int64" => "i64".into(),
        "float64" => "f64".into(),
        "uuid" => "crate::Uuid".into(),
        "string" => "::std::string::String".into(),
        "bytes" | "records" => "::bytes::Bytes".into(),
        "response_records" => "crate::Records".into(),
        other => other.to_string(),
    }
}

fn rust_type(f: &FieldDef) -> String {
    let inner = if is_array(&f.ty) {
        format!("::std::vec::Vec<{}>", scalar_rust(elem_type(&f.ty)))
    } else {
        scalar_rust(&f.ty)
    };
    if nullable_type(f) {
        format!("::core::option::Option<{inner}>")
    } else {
        inner
    }
}

fn fixed_size(ty: &str) -> Option<usize> {
    Some(match ty {
        "bool" | "int8" => 1,
        "int16" | "uint16" => 2,
        "int32" => 4,
        "int64" | "float64" => 8,
        "uuid" => 16,
        _ => return None,
    })
}

fn default_expr(f: &FieldDef) -> Result<String, String> {
    let d = f.default.as_deref();
    let nullable = nullable_type(f);
    if d == Some("null") {
        if !nullable {
            return Err(format!(
                "field {} has default null but is never nullable",
                f.name
            ));
        }
        return Ok("::core::option::Option::None".into());
    }
    let inner = if is_array(&f.ty) {
        "::std::vec::Vec::new()".to_string()
    } else {
        match f.ty.as_str() {
            "bool" => d.unwrap_or("false").to_string(),
            "int8" | "int16" | "uint16" | "int32" | "int64" => {
                let v = d.unwrap_or("0");
                v.parse::<i64>()
                    .map_err(|e| format!("field {}: default {v:?}: {e}", f.name))?;
                v.to_string()
            }
            "float64" => {
                let v = d.unwrap_or("0");
                let x: f64 = v
                    .parse()
                    .map_err(|e| format!("field {}: default {v:?}: {e}", f.name))?;
                format!("{x:?}")
            }
            "uuid" => "crate::Uuid::ZERO".into(),
            "string" => match d {
                None | Some("\"\"") => "::std::string::String::new()".into(),
                Some(s) => format!("::std::string::String::from({s:?})"),
            },
            "bytes" | "records" => "::bytes::Bytes::new()".into(),
            "response_records" => "crate::Records::new()".into(),
            other => format!("{other}::default()"),
        }
    };
    Ok(if nullable {
        format!("::core::option::Option::Some({inner})")
    } else {
        inner
    })
}

/// Boolean expression: field `f` of `self` holds its default value (no allocation).
fn is_default(f: &FieldDef) -> Result<String, String> {
    let id = ident(&f.name);
    let d = f.default.as_deref();
    let nullable = nullable_type(f);
    if d == Some("null") {
        return Ok(format!("self.{id}.is_none()"));
    }
    let ty = f.ty.as_str();
    let emptyish =
        is_array(ty) || matches!(ty, "string" | "bytes" | "records" | "response_records");
    if emptyish {
        // A non-null default of these types is always empty (the converter rejects others).
        if ty == "string" && !matches!(d, None | Some("\"\"")) {
            let lit = d.unwrap_or_default();
            return Ok(if nullable {
                format!("self.{id}.as_deref() == Some({lit:?})")
            } else {
                format!("self.{id} == {lit:?}")
            });
        }
        return Ok(if nullable {
            format!("self.{id}.as_ref().is_some_and(|v| v.is_empty())")
        } else {
            format!("self.{id}.is_empty()")
        });
    }
    Ok(format!("self.{id} == {}", default_expr(f)?))
}

// ---------------------------------------------------------------------------------------------
// Decode / encode / size expressions

/// Expression of type `Result<T, DecodeError>` reading one non-nullable element of `ty`.
fn dec_elem(ty: &str, c: &str) -> String {
    match ty {
        "bool" => "d.bool()".into(),
        "int8" => "d.i8()".into(),
        "int16" => "d.i16()".into(),
        "uint16" => "d.u16()".into(),
        "int32" => "d.i32()".into(),
        "int64" => "d.i64()".into(),
        "float64" => "d.f64()".into(),
        "uuid" => "d.uuid()".into(),
        "string" => format!("d.string({c})"),
        "bytes" | "records" => format!("d.bytes({c})"),
        "response_records" => format!("d.bytes({c}).map(crate::Records::from)"),
        s => format!("{s}::decode(d, version)"),
    }
}

fn min_elem(ty: &str, c: &str) -> String {
    match ty {
        "string" => format!("if {c} {{ 1 }} else {{ 2 }}"),
        "bytes" | "records" | "response_records" => format!("if {c} {{ 1 }} else {{ 4 }}"),
        s => match fixed_size(s) {
            Some(n) => n.to_string(),
            None => format!("{s}::min_size(version)"),
        },
    }
}

/// Expression of type `Result<FieldType, DecodeError>` reading field `f`.
fn dec_field(f: &FieldDef) -> String {
    let c = compact_expr(f);
    let nullable = nullable_type(f);
    let ty = f.ty.as_str();
    let opt = if is_array(ty) {
        let e = elem_type(ty);
        Some(format!(
            "crate::rt::array(d, {c}, {}, |d| {})",
            min_elem(e, &c),
            dec_elem(e, &c)
        ))
    } else {
        match ty {
            "string" => Some(format!("d.nullable_string({c})")),
            "bytes" | "records" => Some(format!("d.nullable_bytes({c})")),
            "response_records" => Some(format!(
                "d.nullable_bytes({c}).map(|v| v.map(crate::Records::from))"
            )),
            s if !is_primitive(s) && nullable => Some(format!(
                "crate::rt::nullable_struct(d, |d| {s}::decode(d, version))"
            )),
            _ => None,
        }
    };
    match opt {
        None => dec_elem(ty, &c),
        Some(opt) if nullable => {
            if nullable_everywhere(f) {
                opt
            } else {
                format!(
                    "{opt}.and_then(|v| crate::rt::check_null(v, {}))",
                    cond(&f.nullable)
                )
            }
        }
        Some(opt) => {
            if is_array(ty) {
                format!("{opt}.and_then(crate::rt::non_null)")
            } else {
                dec_elem(ty, &c)
            }
        }
    }
}

/// Statements encoding one non-nullable element `v` (a reference) of `ty`.
fn enc_elem(ty: &str, v: &str, c: &str, path: &str) -> String {
    match ty {
        "bool" => format!("e.bool(*{v});"),
        "int8" => format!("e.i8(*{v});"),
        "int16" => format!("e.i16(*{v});"),
        "uint16" => format!("e.u16(*{v});"),
        "int32" => format!("e.i32(*{v});"),
        "int64" => format!("e.i64(*{v});"),
        "float64" => format!("e.f64(*{v});"),
        "uuid" => format!("e.uuid({v});"),
        "string" => format!("e.string({v}, {c}).map_err(|x| x.at({path:?}))?;"),
        "bytes" => format!("e.bytes({v}, {c}).map_err(|x| x.at({path:?}))?;"),
        "records" => format!("e.records({v}, {c}).map_err(|x| x.at({path:?}))?;"),
        "response_records" => {
            format!("e.response_records({v}, {c}).map_err(|x| x.at({path:?}))?;")
        }
        _ => format!("{v}.encode(e, version)?;"),
    }
}

fn enc_field(f: &FieldDef, v: &str, path: &str) -> String {
    let c = compact_expr(f);
    let nullable = nullable_type(f);
    let ty = f.ty.as_str();
    let mut s = String::new();
    if nullable && !nullable_everywhere(f) {
        let _ = write!(
            s,
            "if {v}.is_none() && !({}) {{ return ::core::result::Result::Err(crate::EncodeError::NullNotAllowed {{ field: {path:?}, version }}); }} ",
            cond(&f.nullable)
        );
    }
    if is_array(ty) {
        let e = elem_type(ty);
        let body = |items: &str| {
            format!(
                "e.array_len(::core::option::Option::Some({items}.len()), {c}).map_err(|x| x.at({path:?}))?; for item in {items}.iter() {{ {} }}",
                enc_elem(e, "item", &c, path)
            )
        };
        if nullable {
            let _ = write!(
                s,
                "match {v} {{ ::core::option::Option::None => e.array_len(::core::option::Option::None, {c}).map_err(|x| x.at({path:?}))?, ::core::option::Option::Some(items) => {{ {} }} }}",
                body("items")
            );
        } else {
            s.push_str(&body(v));
        }
        return s;
    }
    if !nullable {
        s.push_str(&enc_elem(ty, v, &c, path));
        return s;
    }
    match ty {
        "string" => {
            let _ = write!(
                s,
                "e.nullable_string({v}.as_deref(), {c}).map_err(|x| x.at({path:?}))?;"
            );
        }
        "bytes" => {
            let _ = write!(
                s,
                "e.nullable_bytes({v}.as_ref(), {c}).map_err(|x| x.at({path:?}))?;"
            );
        }
        "records" => {
            let _ = write!(
                s,
                "e.nullable_records({v}.as_ref(), {c}).map_err(|x| x.at({path:?}))?;"
            );
        }
        "response_records" => {
            let _ = write!(
                s,
                "e.nullable_response_records({v}.as_ref(), {c}).map_err(|x| x.at({path:?}))?;"
            );
        }
        _ => {
            let _ = write!(
                s,
                "match {v} {{ ::core::option::Option::None => e.i8(-1), ::core::option::Option::Some(inner) => {{ e.i8(1); inner.encode(e, version)?; }} }}"
            );
        }
    }
    s
}

fn size_elem(ty: &str, v: &str, c: &str) -> String {
    match ty {
        "string" => {
            format!("crate::codec::size::string(::core::option::Option::Some({v}.len()), {c})")
        }
        "bytes" | "records" | "response_records" => {
            format!("crate::codec::size::bytes(::core::option::Option::Some({v}.len()), {c})")
        }
        s => match fixed_size(s) {
            Some(n) => n.to_string(),
            None => format!("{v}.encoded_size(version)"),
        },
    }
}

fn size_field(f: &FieldDef, v: &str) -> String {
    let c = compact_expr(f);
    let ty = f.ty.as_str();
    let nullable = nullable_type(f);
    if is_array(ty) {
        let e = elem_type(ty);
        let body = |items: &str| {
            match fixed_size(e) {
            Some(n) => format!("crate::codec::size::array(::core::option::Option::Some({items}.len()), {c}) + {items}.len() * {n}"),
            None => format!(
                "crate::codec::size::array(::core::option::Option::Some({items}.len()), {c}) + {items}.iter().map(|item| {}).sum::<usize>()",
                size_elem(e, "item", &c)
            ),
        }
        };
        if nullable {
            return format!(
                "{v}.as_ref().map_or(crate::codec::size::array(::core::option::Option::None, {c}), |items| {})",
                body("items")
            );
        }
        return body(v);
    }
    if !nullable {
        return size_elem(ty, v, &c);
    }
    match ty {
        "string" => format!("crate::codec::size::string({v}.as_ref().map(|s| s.len()), {c})"),
        "bytes" | "records" | "response_records" => {
            format!("crate::codec::size::bytes({v}.as_ref().map(|s| s.len()), {c})")
        }
        _ => format!("1 + {v}.as_ref().map_or(0, |inner| inner.encoded_size(version))"),
    }
}

fn min_field(f: &FieldDef) -> String {
    let c = compact_expr(f);
    let ty = f.ty.as_str();
    if is_array(ty) {
        return format!("if {c} {{ 1 }} else {{ 4 }}");
    }
    match ty {
        "string" => format!("if {c} {{ 1 }} else {{ 2 }}"),
        "bytes" | "records" | "response_records" => format!("if {c} {{ 1 }} else {{ 4 }}"),
        s => match fixed_size(s) {
            Some(n) => n.to_string(),
            None if nullable_type(f) => "1".into(),
            None => format!("{s}::min_size(version)"),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Message generation

fn doc_lines(out: &mut String, indent: &str, doc: &str) {
    if !doc.is_empty() {
        let _ = writeln!(out, "{indent}/// {}", doc.replace('\r', " "));
    }
}

fn gen_message(m: &MessageDef, out: &mut String, glue: &mut String) -> Result<(), String> {
    let flex_cond = cond(&m.flexible);
    let has_flex = !m.flexible.is_empty();
    let structs = collect_structs(m)?;
    let module = &m.module;
    let _ = writeln!(
        out,
        "/// `{}`: {} (versions {}, flexible {}).",
        m.name, m.kind, m.versions, m.flexible
    );
    let _ = writeln!(out, "pub mod {module} {{");
    let _ = writeln!(
        out,
        "    #[allow(unused_imports)]\n    use crate::codec::{{Decoder, Encoder}};"
    );
    for s in &structs {
        for f in s.fields {
            if let Some(t) = f.tag {
                if f.tagged != f.versions {
                    return Err(format!(
                        "{}: tagged field {} (tag {t}) must be tagged in all its versions",
                        m.name, f.name
                    ));
                }
                if !m.flexible.and(&f.tagged).eq(&f.tagged) {
                    return Err(format!(
                        "{}: tagged field {} outside flexible versions",
                        m.name, f.name
                    ));
                }
            }
        }
        let path_prefix = if s.top {
            m.name.clone()
        } else {
            format!("{}.{}", m.name, s.name)
        };
        let mut tagged: Vec<&FieldDef> = s.fields.iter().filter(|f| f.tag.is_some()).collect();
        tagged.sort_by_key(|f| f.tag);
        let regular: Vec<&FieldDef> = s.fields.iter().filter(|f| f.tag.is_none()).collect();

        // The struct.
        let _ = writeln!(
            out,
            "    /// `{}` ({}).",
            s.name,
            if s.top { "message" } else { "nested struct" }
        );
        let _ = writeln!(
            out,
            "    #[derive(Debug, Clone, PartialEq)]\n    pub struct {} {{",
            s.name
        );
        for f in s.fields {
            doc_lines(out, "        ", &f.doc);
            let tag_note = match f.tag {
                Some(t) => format!(", tagged (tag {t})"),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "        /// Versions {}{}{tag_note}.",
                f.versions,
                if nullable_type(f) {
                    format!(", nullable {}", f.nullable)
                } else {
                    String::new()
                }
            );
            let _ = writeln!(out, "        pub {}: {},", ident(&f.name), rust_type(f));
        }
        if has_flex {
            let _ = writeln!(out, "        /// Tagged fields this definition does not know, kept as (tag, raw value) and re-emitted.");
            let _ = writeln!(
                out,
                "        pub unknown_tagged_fields: ::std::vec::Vec<(u32, ::bytes::Bytes)>,"
            );
        }
        let _ = writeln!(out, "    }}\n");

        // Default.
        let _ = writeln!(out, "    impl ::core::default::Default for {} {{\n        fn default() -> Self {{\n            Self {{", s.name);
        for f in s.fields {
            let _ = writeln!(
                out,
                "                {}: {},",
                ident(&f.name),
                default_expr(f)?
            );
        }
        if has_flex {
            let _ = writeln!(
                out,
                "                unknown_tagged_fields: ::std::vec::Vec::new(),"
            );
        }
        let _ = writeln!(out, "            }}\n        }}\n    }}\n");

        let _ = writeln!(out, "    impl {} {{", s.name);
        if s.top {
            let _ = writeln!(
                out,
                "        /// Name of the message.\n        pub const NAME: &'static str = {:?};",
                m.name
            );
            let _ = writeln!(out, "        /// Lowest version in the definition.\n        pub const MIN_VERSION: i16 = {};", m.versions.min);
            let _ = writeln!(out, "        /// Highest version in the definition.\n        pub const MAX_VERSION: i16 = {};", m.versions.max);
            let fm = if has_flex {
                format!("Some({})", m.flexible.min)
            } else {
                "None".into()
            };
            let _ = writeln!(out, "        /// First flexible version, if any.\n        pub const FLEXIBLE_MIN: Option<i16> = {fm};");
        }

        // decode
        let _ = writeln!(out, "        /// Decodes the struct at `version` from `d`.");
        let _ = writeln!(out, "        pub fn decode(d: &mut Decoder, version: i16) -> ::core::result::Result<Self, crate::DecodeError> {{");
        if s.top {
            let _ = writeln!(
                out,
                "            if !({}) {{ return ::core::result::Result::Err(crate::DecodeError::new(crate::DecodeErrorKind::UnsupportedVersion {{ version }}).at({:?})); }}",
                valid_versions(&m.versions),
                m.name
            );
        }
        let _ = writeln!(out, "            let flexible = {flex_cond};");
        let _ = writeln!(out, "            let mut this = Self::default();");
        for f in &regular {
            let path = format!("{path_prefix}.{}", ident(&f.name));
            let _ = writeln!(
                out,
                "            if {} {{ this.{} = {}.map_err(|e| e.at({path:?}))?; }}",
                cond(&f.versions),
                ident(&f.name),
                dec_field(f)
            );
        }
        if has_flex {
            let tpath = format!("{path_prefix}._tagged_fields");
            let _ = writeln!(out, "            if flexible {{");
            let _ = writeln!(
                out,
                "                let n = d.tagged_count().map_err(|e| e.at({tpath:?}))?;"
            );
            let _ = writeln!(out, "                for _ in 0..n {{");
            let _ = writeln!(
                out,
                "                    let tag = d.uvarint().map_err(|e| e.at({tpath:?}))?;"
            );
            let _ = writeln!(out, "                    let size = d.uvarint().map_err(|e| e.at({tpath:?}))? as usize;");
            let _ = writeln!(
                out,
                "                    let mut sub = d.sub(size).map_err(|e| e.at({tpath:?}))?;"
            );
            let _ = writeln!(out, "                    match tag {{");
            for f in &tagged {
                let path = format!("{path_prefix}.{}", ident(&f.name));
                let _ = writeln!(
                    out,
                    "                        {} if {} => {{ let d = &mut sub; this.{} = {}.map_err(|e| e.at({path:?}))?; crate::rt::tag_consumed(d, tag, size).map_err(|e| e.at({path:?}))?; }}",
                    f.tag.unwrap_or_default(),
                    cond(&f.tagged),
                    ident(&f.name),
                    dec_field(f)
                );
            }
            let _ = writeln!(out, "                        _ => this.unknown_tagged_fields.push((tag, crate::rt::rest(&mut sub))),");
            let _ = writeln!(out, "                    }}\n                }}");
            let _ = writeln!(
                out,
                "                crate::rt::sort_unknown(&mut this.unknown_tagged_fields);"
            );
            let _ = writeln!(out, "            }}");
        }
        let _ = writeln!(
            out,
            "            ::core::result::Result::Ok(this)\n        }}\n"
        );

        // encode
        let _ = writeln!(out, "        /// Encodes the struct at `version` into `e`.");
        let _ = writeln!(out, "        pub fn encode(&self, e: &mut Encoder, version: i16) -> ::core::result::Result<(), crate::EncodeError> {{");
        if s.top {
            let _ = writeln!(
                out,
                "            if !({}) {{ return ::core::result::Result::Err(crate::EncodeError::UnsupportedVersion {{ message: {:?}, version }}); }}",
                valid_versions(&m.versions),
                m.name
            );
        }
        let _ = writeln!(out, "            let flexible = {flex_cond};");
        for f in &regular {
            let path = format!("{path_prefix}.{}", ident(&f.name));
            let v = format!("(&self.{})", ident(&f.name));
            let absent = if f.ignorable {
                String::new()
            } else {
                format!(
                    " else if !({}) {{ return ::core::result::Result::Err(crate::EncodeError::FieldNotInVersion {{ field: {path:?}, version }}); }}",
                    is_default(f)?
                )
            };
            let _ = writeln!(
                out,
                "            if {} {{ {} }}{absent}",
                cond(&f.versions),
                enc_field(f, &v, &path)
            );
        }
        if has_flex {
            let _ = writeln!(out, "            if flexible {{");
            let _ = writeln!(
                out,
                "                let mut count = self.unknown_tagged_fields.len();"
            );
            for f in &tagged {
                let id = ident(&f.name);
                let path = format!("{path_prefix}.{id}");
                let _ = writeln!(
                    out,
                    "                let present_{id} = {} && !({});",
                    cond(&f.tagged),
                    is_default(f)?
                );
                if !f.ignorable {
                    let _ = writeln!(
                        out,
                        "                if !({}) && !({}) {{ return ::core::result::Result::Err(crate::EncodeError::FieldNotInVersion {{ field: {path:?}, version }}); }}",
                        cond(&f.tagged),
                        is_default(f)?
                    );
                }
                let _ = writeln!(out, "                count += usize::from(present_{id});");
            }
            let _ = writeln!(out, "                e.uvarint(count as u32);");
            let _ = writeln!(out, "                let unknown = crate::rt::sorted_unknown(&self.unknown_tagged_fields);");
            let _ = writeln!(out, "                let mut next = 0;");
            for f in &tagged {
                let id = ident(&f.name);
                let path = format!("{path_prefix}.{id}");
                let t = f.tag.unwrap_or_default();
                let v = format!("(&self.{id})");
                let _ = writeln!(
                    out,
                    "                if present_{id} {{ next = crate::rt::write_unknown_below(e, &unknown, next, {t}); e.uvarint({t}); e.uvarint(({}) as u32); {} }}",
                    size_field(f, &v),
                    enc_field(f, &v, &path)
                );
            }
            let _ = writeln!(
                out,
                "                crate::rt::write_unknown_rest(e, &unknown, next);"
            );
            let _ = writeln!(
                out,
                "            }} else if !self.unknown_tagged_fields.is_empty() {{"
            );
            let _ = writeln!(
                out,
                "                return ::core::result::Result::Err(crate::EncodeError::FieldNotInVersion {{ field: {:?}, version }});",
                format!("{path_prefix}.unknown_tagged_fields")
            );
            let _ = writeln!(out, "            }}");
            // Tagged fields that exist but are not in a flexible version cannot happen: the
            // generator checked above that tagged versions lie inside the flexible versions.
        }
        let _ = writeln!(
            out,
            "            ::core::result::Result::Ok(())\n        }}\n"
        );

        // encoded_size
        let _ = writeln!(
            out,
            "        /// Bytes `encode` writes at `version` (valid when `encode` succeeds)."
        );
        let _ = writeln!(
            out,
            "        pub fn encoded_size(&self, version: i16) -> usize {{"
        );
        let _ = writeln!(out, "            let flexible = {flex_cond};");
        let _ = writeln!(out, "            let mut n = 0usize;");
        for f in &regular {
            let v = format!("(&self.{})", ident(&f.name));
            let _ = writeln!(
                out,
                "            if {} {{ n += {}; }}",
                cond(&f.versions),
                size_field(f, &v)
            );
        }
        if has_flex {
            let _ = writeln!(out, "            if flexible {{");
            let _ = writeln!(
                out,
                "                let mut count = self.unknown_tagged_fields.len();"
            );
            for f in &tagged {
                let id = ident(&f.name);
                let v = format!("(&self.{id})");
                let _ = writeln!(
                    out,
                    "                if {} && !({}) {{ count += 1; let s = {}; n += crate::codec::size::uvarint({}) + crate::codec::size::uvarint(s as u32) + s; }}",
                    cond(&f.tagged),
                    is_default(f)?,
                    size_field(f, &v),
                    f.tag.unwrap_or_default()
                );
            }
            let _ = writeln!(
                out,
                "                n += crate::codec::size::uvarint(count as u32);"
            );
            let _ = writeln!(out, "                for (tag, value) in &self.unknown_tagged_fields {{ n += crate::codec::size::uvarint(*tag) + crate::codec::size::uvarint(value.len() as u32) + value.len(); }}");
            let _ = writeln!(out, "            }}");
        }
        let _ = writeln!(out, "            n\n        }}\n");

        // min_size
        let _ = writeln!(out, "        /// The fewest bytes any encoding of this struct takes at `version` (bounds array counts).");
        let _ = writeln!(out, "        pub fn min_size(version: i16) -> usize {{");
        let _ = writeln!(out, "            let flexible = {flex_cond};");
        let _ = writeln!(out, "            let mut n = usize::from(flexible);");
        for f in &regular {
            let _ = writeln!(
                out,
                "            if {} {{ n += {}; }}",
                cond(&f.versions),
                min_field(f)
            );
        }
        let _ = writeln!(out, "            n\n        }}");
        let _ = writeln!(out, "    }}\n");

        if s.top {
            let _ = writeln!(out, "    impl crate::Message for {} {{", s.name);
            let _ = writeln!(out, "        const NAME: &'static str = {:?};", m.name);
            let _ = writeln!(out, "        const MIN_VERSION: i16 = {};", m.versions.min);
            let _ = writeln!(out, "        const MAX_VERSION: i16 = {};", m.versions.max);
            let _ = writeln!(out, "        fn decode(d: &mut Decoder, version: i16) -> ::core::result::Result<Self, crate::DecodeError> {{ Self::decode(d, version) }}");
            let _ = writeln!(out, "        fn encode(&self, e: &mut Encoder, version: i16) -> ::core::result::Result<(), crate::EncodeError> {{ Self::encode(self, e, version) }}");
            let _ = writeln!(out, "        fn encoded_size(&self, version: i16) -> usize {{ Self::encoded_size(self, version) }}");
            let _ = writeln!(out, "    }}\n");
        }

        gen_glue_struct(m, s, glue);
    }
    let _ = writeln!(out, "}}\n");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Oracle glue (random values valid for a version)

fn gen_fn_name(m: &MessageDef, s: &str) -> String {
    format!("gen_{}__{}", m.module, s)
}

fn gen_elem(m: &MessageDef, ty: &str) -> String {
    match ty {
        "bool" => "r.bool()".into(),
        "int8" => "r.i8()".into(),
        "int16" => "r.i16()".into(),
        "uint16" => "r.u16()".into(),
        "int32" => "r.i32()".into(),
        "int64" => "r.i64()".into(),
        "float64" => "r.f64()".into(),
        "uuid" => "r.uuid()".into(),
        "string" => "r.string()".into(),
        "bytes" | "records" => "r.bytes()".into(),
        "response_records" => "sluice_protocol::Records::from(r.bytes())".into(),
        s => format!("{}(r, version)", gen_fn_name(m, s)),
    }
}

fn gen_value(m: &MessageDef, f: &FieldDef) -> String {
    let ty = f.ty.as_str();
    let inner = if is_array(ty) {
        format!(
            "(0..r.count()).map(|_| {}).collect::<::std::vec::Vec<_>>()",
            gen_elem(m, elem_type(ty))
        )
    } else {
        gen_elem(m, ty)
    };
    if nullable_type(f) {
        format!(
            "if ({}) && r.chance(5) {{ None }} else {{ Some({inner}) }}",
            cond(&f.nullable)
        )
    } else {
        inner
    }
}

fn gen_glue_struct(m: &MessageDef, s: &StructGen<'_>, glue: &mut String) {
    let module = &m.module;
    let _ = writeln!(
        glue,
        "#[allow(non_snake_case, unused_variables, unused_mut, clippy::all)]\nfn {}(r: &mut Rng, version: i16) -> sluice_protocol::messages::{module}::{} {{",
        gen_fn_name(m, &s.name),
        s.name
    );
    let _ = writeln!(glue, "    let flexible = {};", cond(&m.flexible));
    let _ = writeln!(
        glue,
        "    let mut this = sluice_protocol::messages::{module}::{}::default();",
        s.name
    );
    for f in s.fields {
        let c = if f.tag.is_some() {
            cond(&f.tagged)
        } else {
            cond(&f.versions)
        };
        let _ = writeln!(
            glue,
            "    if {c} {{ this.{} = {}; }}",
            ident(&f.name),
            gen_value(m, f)
        );
    }
    if !m.flexible.is_empty() {
        let _ = writeln!(
            glue,
            "    if flexible {{ this.unknown_tagged_fields = r.unknown_tagged_fields(); }}"
        );
    }
    let _ = writeln!(glue, "    this\n}}\n");
}

/// `struct_sizes()`: (struct path, version, in-memory bytes, minimum wire bytes) for every
/// nested struct at every version in which it can appear.
fn gen_struct_sizes(messages: &[MessageDef]) -> Result<String, String> {
    let mut out = String::from("/// (struct, version, size_of, min_size) for every struct and version.\npub fn struct_sizes() -> Vec<(&'static str, i16, usize, usize)> {\n    let mut v = Vec::new();\n");
    for m in messages {
        // Top-level messages are never array elements (and may be empty, like ApiVersions v0).
        for s in collect_structs(m)?.into_iter().filter(|s| !s.top) {
            let path = format!("sluice_protocol::messages::{}::{}", m.module, s.name);
            let _ = writeln!(
                out,
                "    for version in {}..={} {{ v.push(({:?}, version, std::mem::size_of::<{path}>(), {path}::min_size(version))); }}",
                s.versions.min,
                s.versions.max,
                format!("{}.{}", m.name, s.name)
            );
        }
    }
    out.push_str("    v\n}\n");
    Ok(out)
}

fn gen_cases(messages: &[MessageDef], glue: &mut String) {
    let _ = writeln!(
        glue,
        "/// Every message definition with its round-trip hooks.\npub const CASES: &[Case] = &["
    );
    for m in messages {
        let ours = format!("sluice_protocol::messages::{}::{}", m.module, m.name);
        let generate = gen_fn_name(m, &m.name);
        let run_self = format!("|r, v| check_self::<{ours}>({generate}(r, v), v)");
        let run = if NOT_IN_ORACLE.contains(&m.name.as_str()) {
            run_self.clone()
        } else {
            format!(
                "|r, v| check::<{ours}, kafka_protocol::messages::{}>({generate}(r, v), v)",
                m.name
            )
        };
        // Kafka marks only the request as unstable; the response shares its fate.
        let unstable = m.unstable_latest
            || messages
                .iter()
                .any(|o| o.api_key.is_some() && o.api_key == m.api_key && o.unstable_latest);
        let _ = writeln!(
            glue,
            "    Case {{ name: {:?}, min: {}, max: {}, unstable_latest: {unstable}, run: {run}, run_self: {run_self} }},",
            m.name, m.versions.min, m.versions.max
        );
    }
    let _ = writeln!(glue, "];");
}

// ---------------------------------------------------------------------------------------------
// ApiKey table and Request/Response enums

fn gen_api(messages: &[MessageDef]) -> Result<String, String> {
    let mut reqs: BTreeMap<i16, &MessageDef> = BTreeMap::new();
    let mut resps: BTreeMap<i16, &MessageDef> = BTreeMap::new();
    for m in messages {
        let Some(k) = m.api_key else { continue };
        let map = match m.kind.as_str() {
            "request" => &mut reqs,
            "response" => &mut resps,
            _ => continue,
        };
        if map.insert(k, m).is_some() {
            return Err(format!("api key {k} defined twice"));
        }
    }
    let mut out = String::new();
    let mut apis = Vec::new();
    for (k, req) in &reqs {
        let resp = resps
            .get(k)
            .ok_or_else(|| format!("no response for api key {k}"))?;
        if resp.versions != req.versions || resp.flexible != req.flexible {
            return Err(format!(
                "{} and {} disagree on versions",
                req.name, resp.name
            ));
        }
        let api = req
            .name
            .strip_suffix("Request")
            .ok_or_else(|| format!("{}: bad name", req.name))?;
        apis.push((*k, api.to_string(), *req, *resp));
    }

    let _ = writeln!(out, "/// Every API this codec speaks, by Kafka API key.");
    let _ = writeln!(out, "#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]\n#[repr(i16)]\npub enum ApiKey {{");
    for (k, api, _, _) in &apis {
        let _ = writeln!(out, "    {api} = {k},");
    }
    let _ = writeln!(out, "}}\n");

    let _ = writeln!(
        out,
        "/// Every API key with its version table, in key order."
    );
    let _ = writeln!(out, "pub const API_TABLE: &[ApiInfo] = &[");
    for (_, api, req, _) in &apis {
        let fm = if req.flexible.is_empty() {
            "None".into()
        } else {
            format!("Some({})", req.flexible.min)
        };
        let _ = writeln!(
            out,
            "    ApiInfo {{ key: ApiKey::{api}, name: {api:?}, min_version: {}, max_version: {}, flexible_min: {fm}, unstable_latest: {} }},",
            req.versions.min, req.versions.max, req.unstable_latest
        );
    }
    let _ = writeln!(out, "];\n");

    let _ = writeln!(out, "impl ApiKey {{");
    let _ = writeln!(
        out,
        "    /// Every API key, in key order.\n    pub const ALL: &'static [ApiKey] = &["
    );
    for (_, api, _, _) in &apis {
        let _ = writeln!(out, "        ApiKey::{api},");
    }
    let _ = writeln!(out, "    ];\n");
    let _ = writeln!(out, "    /// The API with this key, if we know it.\n    pub fn from_i16(key: i16) -> Option<ApiKey> {{\n        match key {{");
    for (k, api, _, _) in &apis {
        let _ = writeln!(out, "            {k} => Some(ApiKey::{api}),");
    }
    let _ = writeln!(out, "            _ => None,\n        }}\n    }}\n");
    let _ = writeln!(out, "    /// This API's row of [`API_TABLE`].\n    pub fn info(self) -> &'static ApiInfo {{\n        match self {{");
    for (i, (_, api, _, _)) in apis.iter().enumerate() {
        let _ = writeln!(out, "            ApiKey::{api} => &API_TABLE[{i}],");
    }
    let _ = writeln!(out, "        }}\n    }}\n}}\n");

    // Request and Response enums.
    for (kind, idx) in [("Request", 2usize), ("Response", 3usize)] {
        let _ = writeln!(out, "/// Any {} body, by API.", kind.to_lowercase());
        let _ = writeln!(out, "#[derive(Debug, Clone, PartialEq)]\n#[allow(clippy::large_enum_variant)]\npub enum {kind} {{");
        for (_, api, req, resp) in &apis {
            let m = if idx == 2 { req } else { resp };
            let _ = writeln!(out, "    {api}(crate::messages::{}::{}),", m.module, m.name);
        }
        let _ = writeln!(out, "}}\n");
        let _ = writeln!(out, "impl {kind} {{");
        let _ = writeln!(out, "    /// The API this body belongs to.\n    pub fn api_key(&self) -> ApiKey {{\n        match self {{");
        for (_, api, _, _) in &apis {
            let _ = writeln!(out, "            {kind}::{api}(_) => ApiKey::{api},");
        }
        let _ = writeln!(out, "        }}\n    }}\n");
        let _ = writeln!(
            out,
            "    /// Decodes the body of `api` at `version`.\n    pub fn decode(api: ApiKey, d: &mut crate::Decoder, version: i16) -> Result<Self, crate::DecodeError> {{\n        match api {{"
        );
        for (_, api, req, resp) in &apis {
            let m = if idx == 2 { req } else { resp };
            let _ = writeln!(out, "            ApiKey::{api} => crate::messages::{}::{}::decode(d, version).map({kind}::{api}),", m.module, m.name);
        }
        let _ = writeln!(out, "        }}\n    }}\n");
        let _ = writeln!(
            out,
            "    /// Encodes the body at `version`.\n    pub fn encode(&self, e: &mut crate::Encoder, version: i16) -> Result<(), crate::EncodeError> {{\n        match self {{"
        );
        for (_, api, _, _) in &apis {
            let _ = writeln!(out, "            {kind}::{api}(m) => m.encode(e, version),");
        }
        let _ = writeln!(out, "        }}\n    }}\n");
        let _ = writeln!(out, "    /// Bytes `encode` writes at `version`.\n    pub fn encoded_size(&self, version: i16) -> usize {{\n        match self {{");
        for (_, api, _, _) in &apis {
            let _ = writeln!(
                out,
                "            {kind}::{api}(m) => m.encoded_size(version),"
            );
        }
        let _ = writeln!(out, "        }}\n    }}\n}}\n");
        for (_, api, req, resp) in &apis {
            let m = if idx == 2 { req } else { resp };
            let _ = writeln!(
                out,
                "impl From<crate::messages::{}::{}> for {kind} {{\n    fn from(m: crate::messages::{}::{}) -> Self {{\n        {kind}::{api}(m)\n    }}\n}}\n",
                m.module, m.name, m.module, m.name
            );
        }
    }
    Ok(out)
}
