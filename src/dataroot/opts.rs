//! `volumes/<name>/opts.json`: a local volume's mount options, decoded the
//! way dockerd decodes them.
//!
//! dockerd (Go's encoding/json) refuses to START when one opts.json does not
//! decode, and prints the Go error verbatim. To predict that message we check
//! syntax like Go's scanner (`checkValid` runs over the whole input first) and
//! then decode in document order like Go's decoder: keys match the struct
//! fields case-insensitively, unknown keys are ignored, `null` leaves a field
//! as it is, and the first type mismatch is the one reported.

use serde::{Deserialize, Serialize};

/// Largest opts.json read (here and in a bundle). dockerd writes under 200
/// bytes; one larger than 1 MiB is reported unreadable instead of being
/// read whole into memory.
pub const MAX_OPTS_JSON: u64 = 1 << 20;

/// The decoded options: `{"MountType","MountOpts","MountDevice","Quota":{"Size"}}`.
/// All-zero means a plain directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeOptions {
    #[serde(rename = "MountType")]
    pub mount_type: String,
    #[serde(rename = "MountOpts")]
    pub mount_opts: String,
    #[serde(rename = "MountDevice")]
    pub mount_device: String,
    #[serde(rename = "Quota")]
    pub quota: Quota,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    #[serde(rename = "Size")]
    pub size: u64,
}

impl VolumeOptions {
    /// Whether dockerd treats the volume as a plain directory.
    pub fn is_plain(&self) -> bool {
        self == &VolumeOptions::default()
    }

    /// Whether mounting needs the network (nfs/cifs, or an `addr=` option):
    /// that cannot be decided offline.
    pub fn network_filesystem(&self) -> bool {
        matches!(
            self.mount_type.as_str(),
            "nfs" | "nfs4" | "cifs" | "smb" | "smb3"
        ) || self.mount_opts.split(',').any(|o| o.starts_with("addr="))
    }

    /// Decodes an opts.json exactly as dockerd does; the error is Go's text.
    pub fn decode(bytes: &[u8]) -> Result<VolumeOptions, String> {
        // The scanner recurses once per open `[` or `{`, at most
        // MAX_NESTING_DEPTH deep, and so do decoding and dropping the
        // value: more than a 2 MiB thread stack holds. Deeply nested input
        // (only ever hostile) is decoded on a thread whose stack fits the
        // deepest recursion allowed.
        let opens = bytes.iter().filter(|&&b| b == b'[' || b == b'{').count();
        if opens <= SHALLOW {
            return Self::decode_here(bytes);
        }
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .stack_size(DEEP_STACK)
                .spawn_scoped(scope, || Self::decode_here(bytes))
                .map_err(|e| format!("cannot start the JSON decoder: {e}"))?
                .join()
                .map_err(|_| "the JSON decoder failed".to_string())?
        })
    }

    fn decode_here(bytes: &[u8]) -> Result<VolumeOptions, String> {
        let value = GoJson::parse(bytes)?;
        let mut opts = VolumeOptions::default();
        decode_opts(&value, &mut opts)?;
        Ok(opts)
    }
}

/// A JSON value as Go's decoder walks it: objects keep document order and
/// duplicate keys, numbers keep their literal text.
#[derive(Debug, Clone, PartialEq)]
enum GoJson {
    Null,
    Bool,
    Number(String),
    String(String),
    Array,
    Object(Vec<(String, GoJson)>),
}

impl GoJson {
    /// The word Go uses for the JSON kind in "cannot unmarshal X".
    fn kind(&self) -> String {
        match self {
            GoJson::Null => "null".into(),
            GoJson::Bool => "bool".into(),
            GoJson::Number(text) => format!("number {text}"),
            GoJson::String(_) => "string".into(),
            GoJson::Array => "array".into(),
            GoJson::Object(_) => "object".into(),
        }
    }

    /// Go's kind word without the number literal (used for non-numeric targets).
    fn short_kind(&self) -> &'static str {
        match self {
            GoJson::Null => "null",
            GoJson::Bool => "bool",
            GoJson::Number(_) => "number",
            GoJson::String(_) => "string",
            GoJson::Array => "array",
            GoJson::Object(_) => "object",
        }
    }

    fn parse(bytes: &[u8]) -> Result<GoJson, String> {
        let mut scanner = Scanner {
            bytes,
            pos: 0,
            depth: 0,
        };
        scanner.skip_space();
        let value = scanner.value()?;
        scanner.skip_space();
        if let Some(&c) = bytes.get(scanner.pos) {
            return Err(invalid(c, "after top-level value"));
        }
        Ok(value)
    }
}

fn decode_opts(value: &GoJson, opts: &mut VolumeOptions) -> Result<(), String> {
    let fields = match value {
        GoJson::Null => return Ok(()),
        GoJson::Object(fields) => fields,
        other => {
            return Err(format!(
                "json: cannot unmarshal {} into Go value of type local.optsConfig",
                other.short_kind()
            ))
        }
    };
    let mut first_error = None;
    for (key, value) in fields {
        let result = if key.eq_ignore_ascii_case("MountType") {
            decode_string(value, "MountType", &mut opts.mount_type)
        } else if key.eq_ignore_ascii_case("MountOpts") {
            decode_string(value, "MountOpts", &mut opts.mount_opts)
        } else if key.eq_ignore_ascii_case("MountDevice") {
            decode_string(value, "MountDevice", &mut opts.mount_device)
        } else if key.eq_ignore_ascii_case("Quota") {
            decode_quota(value, &mut opts.quota)
        } else {
            Ok(())
        };
        // Go keeps decoding after a type mismatch and reports the first one.
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Go names the innermost struct type, then the full field path:
/// `optsConfig.MountType`, but `Quota.Quota.Size` (seen on dockerd 20.10.24,
/// go1.19).
fn type_error(value: &GoJson, field: &str, go_type: &str) -> String {
    type_error_of(value.short_kind(), field, go_type)
}

fn type_error_of(kind: &str, field: &str, go_type: &str) -> String {
    let innermost = match field.rsplit_once('.') {
        Some((parent, _)) => parent.rsplit('.').next().unwrap_or(parent),
        None => "optsConfig",
    };
    format!(
        "json: cannot unmarshal {kind} into Go struct field {innermost}.{field} of type {go_type}"
    )
}

fn decode_string(value: &GoJson, field: &str, out: &mut String) -> Result<(), String> {
    match value {
        GoJson::Null => Ok(()),
        GoJson::String(s) => {
            *out = s.clone();
            Ok(())
        }
        other => Err(type_error(other, field, "string")),
    }
}

fn decode_quota(value: &GoJson, quota: &mut Quota) -> Result<(), String> {
    let fields = match value {
        GoJson::Null => return Ok(()),
        GoJson::Object(fields) => fields,
        other => return Err(type_error(other, "Quota", "quota.Quota")),
    };
    let mut first_error = None;
    for (key, value) in fields {
        if !key.eq_ignore_ascii_case("Size") {
            continue;
        }
        let result = match value {
            GoJson::Null => Ok(()),
            GoJson::Number(text) => match text.parse::<u64>() {
                Ok(size) => {
                    quota.size = size;
                    Ok(())
                }
                Err(_) => Err(type_error_of(&value.kind(), "Quota.Size", "uint64")),
            },
            other => Err(type_error(other, "Quota.Size", "uint64")),
        };
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

const UNEXPECTED_END: &str = "unexpected end of JSON input";

/// Go's `quoteChar`: how the scanner names an offending byte.
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => r"'\''".to_string(),
        b'"' => "'\"'".to_string(),
        b'\\' => r"'\\'".to_string(),
        b'\n' => r"'\n'".to_string(),
        b'\r' => r"'\r'".to_string(),
        b'\t' => r"'\t'".to_string(),
        0x07 => r"'\a'".to_string(),
        0x08 => r"'\b'".to_string(),
        0x0c => r"'\f'".to_string(),
        0x0b => r"'\v'".to_string(),
        c if c < 0x20 || c == 0x7f => format!("'\\x{c:02x}'"),
        c if (0x80..0xa0).contains(&c) => format!("'\\u{c:04x}'"),
        c => format!("'{}'", char::from(c)),
    }
}

fn invalid(c: u8, context: &str) -> String {
    format!("invalid character {} {context}", quote_char(c))
}

/// A recursive-descent version of Go's JSON state machine, producing the
/// same error for the same first offending byte.
struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Open objects and arrays around `pos`.
    depth: usize,
}

/// Go's `maxNestingDepth`: the scanner refuses the 10001st nested `[` or
/// `{` with "exceeded max depth".
///
/// # Security
/// Without it a 1 MiB opts.json of `[` recursed a million frames deep and
/// overflowed the stack (a crash, not an error).
const MAX_NESTING_DEPTH: usize = 10_000;

/// Nesting that any thread's stack holds.
const SHALLOW: usize = 256;

/// A stack for MAX_NESTING_DEPTH levels, with room to spare (measured: a
/// debug build needs 8-16 MiB for nested objects; only touched pages cost
/// memory).
const DEEP_STACK: usize = 64 << 20;

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Result<u8, String> {
        let c = self.peek().ok_or_else(|| UNEXPECTED_END.to_string())?;
        self.pos += 1;
        Ok(c)
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn value(&mut self) -> Result<GoJson, String> {
        let c = self.peek().ok_or_else(|| UNEXPECTED_END.to_string())?;
        match c {
            b'{' | b'[' => {
                self.depth += 1;
                if self.depth > MAX_NESTING_DEPTH {
                    return Err(invalid(c, "exceeded max depth"));
                }
                self.pos += 1;
                let value = if c == b'{' {
                    self.object()
                } else {
                    self.array()
                };
                self.depth -= 1;
                value
            }
            b'"' => {
                self.pos += 1;
                self.string().map(GoJson::String)
            }
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.literal(b"true").map(|_| GoJson::Bool),
            b'f' => self.literal(b"false").map(|_| GoJson::Bool),
            b'n' => self.literal(b"null").map(|_| GoJson::Null),
            c => Err(invalid(c, "looking for beginning of value")),
        }
    }

    fn object(&mut self) -> Result<GoJson, String> {
        let mut fields = Vec::new();
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(GoJson::Object(fields));
        }
        loop {
            self.skip_space();
            match self.next()? {
                b'"' => {}
                c => return Err(invalid(c, "looking for beginning of object key string")),
            }
            let key = self.string()?;
            self.skip_space();
            match self.next()? {
                b':' => {}
                c => return Err(invalid(c, "after object key")),
            }
            self.skip_space();
            let value = self.value()?;
            fields.push((key, value));
            self.skip_space();
            match self.next()? {
                b',' => continue,
                b'}' => return Ok(GoJson::Object(fields)),
                c => return Err(invalid(c, "after object key:value pair")),
            }
        }
    }

    fn array(&mut self) -> Result<GoJson, String> {
        self.skip_space();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(GoJson::Array);
        }
        loop {
            self.skip_space();
            self.value()?;
            self.skip_space();
            match self.next()? {
                b',' => continue,
                b']' => return Ok(GoJson::Array),
                c => return Err(invalid(c, "after array element")),
            }
        }
    }

    /// After the opening quote; returns the unescaped text.
    fn string(&mut self) -> Result<String, String> {
        let mut out: Vec<u8> = Vec::new();
        loop {
            match self.next()? {
                b'"' => return Ok(String::from_utf8_lossy(&out).into_owned()),
                b'\\' => match self.next()? {
                    b'"' => out.push(b'"'),
                    b'\\' => out.push(b'\\'),
                    b'/' => out.push(b'/'),
                    b'b' => out.push(0x08),
                    b'f' => out.push(0x0c),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'u' => {
                        let mut code = 0u32;
                        for _ in 0..4 {
                            let c = self.next()?;
                            let digit = (c as char)
                                .to_digit(16)
                                .ok_or_else(|| invalid(c, "in \\u hexadecimal character escape"))?;
                            code = code * 16 + digit;
                        }
                        let ch = char::from_u32(code).unwrap_or('\u{fffd}');
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    }
                    c => return Err(invalid(c, "in string escape code")),
                },
                c if c < 0x20 => return Err(invalid(c, "in string literal")),
                c => out.push(c),
            }
        }
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    fn number(&mut self) -> Result<GoJson, String> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
            match self.peek() {
                Some(b'0'..=b'9') => {}
                Some(c) => return Err(invalid(c, "in numeric literal")),
                None => return Err(UNEXPECTED_END.to_string()),
            }
        }
        if self.next()? != b'0' {
            self.digits();
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            match self.peek() {
                Some(b'0'..=b'9') => self.digits(),
                Some(c) => return Err(invalid(c, "after decimal point in numeric literal")),
                None => return Err(UNEXPECTED_END.to_string()),
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            match self.peek() {
                Some(b'0'..=b'9') => self.digits(),
                Some(c) => return Err(invalid(c, "in exponent of numeric literal")),
                None => return Err(UNEXPECTED_END.to_string()),
            }
        }
        let text = String::from_utf8_lossy(&self.bytes[start..self.pos]).into_owned();
        Ok(GoJson::Number(text))
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), String> {
        let name = String::from_utf8_lossy(word);
        for (i, &expected) in word.iter().enumerate() {
            let c = self.next()?;
            if c != expected {
                // Go's first byte is already known to match.
                debug_assert!(i > 0);
                return Err(invalid(
                    c,
                    &format!("in literal {name} (expecting {})", quote_char(expected)),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        VolumeOptions::decode(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn decodes_what_dockerd_writes() {
        let o = VolumeOptions::decode(
            br#"{"MountType":"tmpfs","MountOpts":"size=1m","MountDevice":"tmpfs","Quota":{"Size":0}}"#,
        )
        .unwrap();
        assert_eq!(o.mount_type, "tmpfs");
        assert_eq!(o.mount_opts, "size=1m");
        assert_eq!(o.mount_device, "tmpfs");
        assert!(!o.is_plain());
    }

    #[test]
    fn keys_match_case_insensitively_and_unknown_keys_are_ignored() {
        let o =
            VolumeOptions::decode(br#"{"mounttype":"nfs","Extra":[1,{"x":null}],"quota":null}"#)
                .unwrap();
        assert_eq!(o.mount_type, "nfs");
        assert!(VolumeOptions::decode(b"null").unwrap().is_plain());
        assert!(VolumeOptions::decode(b" {} ").unwrap().is_plain());
    }

    #[test]
    fn empty_and_truncated_files_fail_like_go() {
        assert_eq!(err(""), "unexpected end of JSON input");
        assert_eq!(
            err("{\"MountType\":\"tmpfs\""),
            "unexpected end of JSON input"
        );
        assert_eq!(err("   "), "unexpected end of JSON input");
    }

    #[test]
    fn syntax_errors_name_the_byte_like_go() {
        assert_eq!(
            err("x"),
            "invalid character 'x' looking for beginning of value"
        );
        assert_eq!(
            err("{x"),
            "invalid character 'x' looking for beginning of object key string"
        );
        assert_eq!(err(r#"{"a" 1}"#), "invalid character '1' after object key");
        assert_eq!(
            err(r#"{"a":1 "b"}"#),
            "invalid character '\"' after object key:value pair"
        );
        assert_eq!(err("{} x"), "invalid character 'x' after top-level value");
        assert_eq!(err("[1 2]"), "invalid character '2' after array element");
        assert_eq!(
            err("tru "),
            "invalid character ' ' in literal true (expecting 'e')"
        );
        assert_eq!(err("-x"), "invalid character 'x' in numeric literal");
        assert_eq!(
            err("1.x"),
            "invalid character 'x' after decimal point in numeric literal"
        );
        assert_eq!(err("\"a\nb\""), r"invalid character '\n' in string literal");
        assert_eq!(
            err(r#""\q""#),
            "invalid character 'q' in string escape code"
        );
    }

    #[test]
    fn type_errors_name_the_field_like_go() {
        assert_eq!(
            err(r#"{"Quota":5}"#),
            "json: cannot unmarshal number into Go struct field optsConfig.Quota of type quota.Quota"
        );
        assert_eq!(
            err(r#"{"MountType":1}"#),
            "json: cannot unmarshal number into Go struct field optsConfig.MountType of type string"
        );
        assert_eq!(
            err(r#"{"Quota":{"Size":-1}}"#),
            "json: cannot unmarshal number -1 into Go struct field Quota.Quota.Size of type uint64"
        );
        assert_eq!(
            err(r#"{"Quota":{"Size":"x"}}"#),
            "json: cannot unmarshal string into Go struct field Quota.Quota.Size of type uint64"
        );
        assert_eq!(
            err(r#"{"Quota":{"Size":1.5}}"#),
            "json: cannot unmarshal number 1.5 into Go struct field Quota.Quota.Size of type uint64"
        );
        assert_eq!(
            err("[]"),
            "json: cannot unmarshal array into Go value of type local.optsConfig"
        );
    }

    #[test]
    fn syntax_is_checked_before_types() {
        // Go runs checkValid over the whole input before decoding.
        assert_eq!(err(r#"{"Quota":5,"#), "unexpected end of JSON input");
    }

    #[test]
    fn first_type_error_wins_after_decoding_on() {
        assert_eq!(
            err(r#"{"MountOpts":true,"Quota":5}"#),
            "json: cannot unmarshal bool into Go struct field optsConfig.MountOpts of type string"
        );
    }

    #[test]
    fn deep_nesting_fails_like_go_instead_of_overflowing_the_stack() {
        // Run on a thread with the default 2 MiB test stack, like cargo test.
        let deep = |n: usize| [vec![b'['; n], vec![b']'; n]].concat();
        let ok = std::thread::spawn(move || VolumeOptions::decode(&deep(MAX_NESTING_DEPTH)))
            .join()
            .unwrap();
        // The deepest nesting Go accepts gets past the scanner.
        assert!(!format!("{ok:?}").contains("exceeded max depth"), "{ok:?}");
        let objects = |n: usize| [b"{\"a\":".repeat(n), b"1".to_vec(), b"}".repeat(n)].concat();
        let ok = std::thread::spawn(move || VolumeOptions::decode(&objects(MAX_NESTING_DEPTH)))
            .join()
            .unwrap();
        assert!(ok.is_ok(), "{ok:?}");
        let too_deep = [vec![b'['; 1 << 20], vec![b']'; 1 << 20]].concat();
        let err = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || VolumeOptions::decode(&too_deep))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(err, Err("invalid character '[' exceeded max depth".into()));
    }

    #[test]
    fn network_filesystems_are_recognised() {
        let nfs = VolumeOptions {
            mount_type: "nfs".into(),
            ..Default::default()
        };
        assert!(nfs.network_filesystem());
        let addr = VolumeOptions {
            mount_type: "none".into(),
            mount_opts: "addr=10.0.0.1,rw".into(),
            ..Default::default()
        };
        assert!(addr.network_filesystem());
    }
}
