//! Parser and model for Sluice's message definition files (`protocol/defs/*.msg`).
//!
//! Shared by `build.rs` (which generates the codec from the model) and by the spec
//! cross-check test (which compares the model with Kafka's JSON specs), so both read the
//! definitions the same way. The format is described in `defs/README.md`. Build-time only.

#![allow(dead_code)]

use std::fmt;

/// An inclusive version range; `none` is the empty range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    pub min: i16,
    pub max: i16,
}

impl Versions {
    pub const NONE: Versions = Versions { min: 1, max: 0 };

    pub fn parse(s: &str) -> Result<Versions, String> {
        let num = |t: &str| {
            t.parse::<i16>()
                .map_err(|e| format!("bad version {t:?}: {e}"))
        };
        if s == "none" {
            Ok(Versions::NONE)
        } else if let Some(a) = s.strip_suffix('+') {
            Ok(Versions {
                min: num(a)?,
                max: i16::MAX,
            })
        } else if let Some((a, b)) = s.split_once('-') {
            Ok(Versions {
                min: num(a)?,
                max: num(b)?,
            })
        } else {
            let v = num(s)?;
            Ok(Versions { min: v, max: v })
        }
    }

    pub fn is_empty(&self) -> bool {
        self.min > self.max
    }

    pub fn contains(&self, v: i16) -> bool {
        v >= self.min && v <= self.max
    }

    /// Intersection with another range.
    pub fn and(&self, o: &Versions) -> Versions {
        let r = Versions {
            min: self.min.max(o.min),
            max: self.max.min(o.max),
        };
        if r.is_empty() {
            Versions::NONE
        } else {
            r
        }
    }
}

impl fmt::Display for Versions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            write!(f, "none")
        } else if self.max == i16::MAX {
            write!(f, "{}+", self.min)
        } else if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

/// One field of a struct.
#[derive(Debug, Clone)]
pub struct FieldDef {
    /// Name as in Kafka's specs (CamelCase).
    pub name: String,
    /// Type as in Kafka's specs: a primitive, a struct name, or `[]` + either.
    pub ty: String,
    pub versions: Versions,
    pub nullable: Versions,
    pub tag: Option<u32>,
    pub tagged: Versions,
    /// Per-field override of the message's flexible versions (only `ClientId` in the header).
    pub flexible: Option<Versions>,
    pub default: Option<String>,
    pub ignorable: bool,
    pub map_key: bool,
    pub doc: String,
    /// Inline struct definition (when the type is a struct declared here).
    pub fields: Vec<FieldDef>,
}

/// A common struct, shared by several fields of one message.
#[derive(Debug, Clone)]
pub struct CommonDef {
    pub name: String,
    pub versions: Versions,
    pub fields: Vec<FieldDef>,
}

/// One message definition file.
#[derive(Debug, Clone)]
pub struct MessageDef {
    /// `request`, `response`, `header` or `data`.
    pub kind: String,
    pub name: String,
    pub api_key: Option<i16>,
    pub versions: Versions,
    pub flexible: Versions,
    pub unstable_latest: bool,
    pub fields: Vec<FieldDef>,
    pub commons: Vec<CommonDef>,
    /// File stem, which is also the Rust module name.
    pub module: String,
}

pub const PRIMITIVES: &[&str] = &[
    "bool",
    "int8",
    "int16",
    "uint16",
    "int32",
    "int64",
    "float64",
    "uuid",
    "string",
    "bytes",
    "records",
    // Not written in definition files: `build.rs` gives a response's `records` fields this type.
    "response_records",
];

pub fn is_primitive(ty: &str) -> bool {
    PRIMITIVES.contains(&ty)
}

struct Line<'a> {
    no: usize,
    indent: usize,
    text: &'a str,
    doc: String,
}

/// Parses one `.msg` file.
pub fn parse(module: &str, src: &str) -> Result<MessageDef, String> {
    let mut lines = Vec::new();
    let mut doc = String::new();
    for (i, raw) in src.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(d) = trimmed.strip_prefix("///") {
            if !doc.is_empty() {
                doc.push(' ');
            }
            doc.push_str(d.trim());
            continue;
        }
        let indent = raw.len() - trimmed.len();
        if indent % 2 != 0 {
            return Err(format!(
                "{module}.msg:{}: indentation must be a multiple of 2",
                i + 1
            ));
        }
        lines.push(Line {
            no: i + 1,
            indent: indent / 2,
            text: trimmed.trim_end(),
            doc: std::mem::take(&mut doc),
        });
    }
    let mut pos = 0;
    let head = lines
        .first()
        .ok_or_else(|| format!("{module}.msg: empty"))?;
    if head.indent != 0 {
        return Err(format!("{module}.msg:{}: expected a message line", head.no));
    }
    let mut words = head.text.split_whitespace();
    let kind = words.next().unwrap_or_default().to_string();
    if !["request", "response", "header", "data"].contains(&kind.as_str()) {
        return Err(format!(
            "{module}.msg:{}: unknown message kind {kind:?}",
            head.no
        ));
    }
    let name = words
        .next()
        .ok_or_else(|| format!("{module}.msg:{}: missing name", head.no))?
        .to_string();
    let mut msg = MessageDef {
        kind,
        name,
        api_key: None,
        versions: Versions::NONE,
        flexible: Versions::NONE,
        unstable_latest: false,
        fields: Vec::new(),
        commons: Vec::new(),
        module: module.to_string(),
    };
    for w in words {
        match w.split_once('=') {
            Some(("key", v)) => {
                msg.api_key = Some(v.parse().map_err(|e| format!("{module}: key: {e}"))?)
            }
            Some(("versions", v)) => msg.versions = Versions::parse(v)?,
            Some(("flexible", v)) => msg.flexible = Versions::parse(v)?,
            None if w == "unstable_latest" => msg.unstable_latest = true,
            _ => return Err(format!("{module}.msg:{}: unknown attribute {w:?}", head.no)),
        }
    }
    pos += 1;
    msg.fields = parse_fields(module, &lines, &mut pos, 1)?;
    while pos < lines.len() {
        let l = &lines[pos];
        let mut words = l.text.split_whitespace();
        if l.indent != 0 || words.next() != Some("common") {
            return Err(format!(
                "{module}.msg:{}: expected `common Name versions=..`",
                l.no
            ));
        }
        let name = words
            .next()
            .ok_or_else(|| format!("{module}.msg:{}: missing name", l.no))?;
        let versions = match words.next().and_then(|w| w.strip_prefix("versions=")) {
            Some(v) => Versions::parse(v)?,
            None => return Err(format!("{module}.msg:{}: missing versions", l.no)),
        };
        pos += 1;
        let fields = parse_fields(module, &lines, &mut pos, 1)?;
        msg.commons.push(CommonDef {
            name: name.to_string(),
            versions,
            fields,
        });
    }
    Ok(msg)
}

fn parse_fields(
    module: &str,
    lines: &[Line<'_>],
    pos: &mut usize,
    depth: usize,
) -> Result<Vec<FieldDef>, String> {
    let mut out = Vec::new();
    while *pos < lines.len() && lines[*pos].indent >= depth {
        let l = &lines[*pos];
        if l.indent > depth {
            return Err(format!("{module}.msg:{}: unexpected indentation", l.no));
        }
        let mut words = l.text.split_whitespace();
        let name = words.next().unwrap_or_default().to_string();
        let ty = words
            .next()
            .ok_or_else(|| format!("{module}.msg:{}: missing type", l.no))?
            .to_string();
        let mut f = FieldDef {
            name,
            ty,
            versions: Versions::NONE,
            nullable: Versions::NONE,
            tag: None,
            tagged: Versions::NONE,
            flexible: None,
            default: None,
            ignorable: false,
            map_key: false,
            doc: l.doc.clone(),
            fields: Vec::new(),
        };
        let mut have_versions = false;
        for w in words {
            match w.split_once('=') {
                Some(("versions", v)) => {
                    f.versions = Versions::parse(v)?;
                    have_versions = true;
                }
                Some(("nullable", v)) => f.nullable = Versions::parse(v)?,
                Some(("tag", v)) => {
                    f.tag = Some(
                        v.parse()
                            .map_err(|e| format!("{module}.msg:{}: tag: {e}", l.no))?,
                    )
                }
                Some(("tagged", v)) => f.tagged = Versions::parse(v)?,
                Some(("flexible", v)) => f.flexible = Some(Versions::parse(v)?),
                Some(("default", v)) => f.default = Some(v.to_string()),
                None if w == "ignorable" => f.ignorable = true,
                None if w == "map_key" => f.map_key = true,
                _ => return Err(format!("{module}.msg:{}: unknown attribute {w:?}", l.no)),
            }
        }
        if !have_versions {
            return Err(format!("{module}.msg:{}: missing versions=", l.no));
        }
        if f.tag.is_some() == f.tagged.is_empty() {
            return Err(format!(
                "{module}.msg:{}: tag= and tagged= go together",
                l.no
            ));
        }
        *pos += 1;
        f.fields = parse_fields(module, lines, pos, depth + 1)?;
        out.push(f);
    }
    Ok(out)
}

/// CamelCase to snake_case, as used for module and field names.
pub fn snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = if i > 0 { Some(chars[i - 1]) } else { None };
            let next = chars.get(i + 1).copied();
            let boundary = match prev {
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if boundary {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}
