//! Byte escapes in string literals, read as Prometheus reads them.
//!
//! Prometheus' lexer (Go's `strconv` rules) reads `\xNN` and the octal `\NNN` as *bytes*, so
//! `"\xc3\xa5"` is `å` and `"a\xc5z"` is not valid UTF-8; promql-parser 0.11 reads them as code
//! points (`Ã¥`, `aÅz`). Hand-written because the parser cannot be told otherwise: before
//! parsing, [`rewrite`] decodes every quoted literal that holds a byte escape of 0x80 or more
//! as Go does and writes it again so that the parser reads the same text: runs of bytes that
//! form UTF-8 become their characters, and each byte that does not becomes a marker character
//! of Unicode's plane 16 private use area, `U+10FF00` + the byte ([`is_byte_marker`]), which no
//! label name accepts and [`go_quote`] prints as Go's `\xNN`. Literals without such escapes
//! are left as they are.

use std::borrow::Cow;

/// The first of the 256 marker characters that stand for bytes that are not UTF-8.
const MARKER_BASE: u32 = 0x10_FF00;

/// Whether `c` stands for a byte of a string literal that is not UTF-8.
pub fn is_byte_marker(c: char) -> bool {
    (MARKER_BASE..MARKER_BASE + 0x100).contains(&u32::from(c))
}

/// Whether `s` is text Prometheus would hold as valid UTF-8: no byte markers in it.
pub fn is_utf8(s: &str) -> bool {
    !s.chars().any(is_byte_marker)
}

/// `s` quoted as Go's `strconv.Quote` quotes it (how Prometheus' errors print a string), the
/// bytes that markers stand for as `\xNN`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if is_byte_marker(c) => out.push_str(&format!("\\x{:02x}", u32::from(c) - MARKER_BASE)),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() && (c as u32) < 0x1_0000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\U{:08x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `query` with every quoted literal holding a byte escape of 0x80 or more written again so
/// that the parser decodes it as Prometheus does (see the module comment). A literal the
/// parser will refuse anyway is left for it to refuse.
pub fn rewrite(query: &str) -> Cow<'_, str> {
    let bytes = query.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let Some(end) = crate::parse::literal_end(bytes, i) else {
            i += 1;
            continue;
        };
        let quote = bytes[i];
        if (quote == b'"' || quote == b'\'') && end > i + 1 && bytes[end - 1] == quote {
            let inner = &query[i + 1..end - 1];
            if let Some(decoded) = decode_with_high_bytes(inner, quote) {
                let out = out.get_or_insert_with(|| String::with_capacity(query.len() + 16));
                out.push_str(&query[copied..i]);
                push_literal(out, &decoded);
                copied = end;
            }
        }
        i = end.max(i + 1);
    }
    match out {
        None => Cow::Borrowed(query),
        Some(mut out) => {
            out.push_str(&query[copied..]);
            Cow::Owned(out)
        }
    }
}

/// The bytes Go reads from the inside of a literal quoted with `quote`, when it holds a byte
/// escape of 0x80 or more; None otherwise, or when an escape is malformed.
fn decode_with_high_bytes(inner: &str, quote: u8) -> Option<Vec<u8>> {
    let b = inner.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut high = false;
    let mut i = 0;
    let hex = |text: Option<&str>| {
        text.filter(|t| t.bytes().all(|c| c.is_ascii_hexdigit()))
            .and_then(|t| u32::from_str_radix(t, 16).ok())
    };
    while i < b.len() {
        if b[i] == b'\n' {
            // Not a literal Go reads: left for the parser to refuse.
            return None;
        }
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let c = *b.get(i + 1)?;
        i += 2;
        match c {
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'\\' => out.push(b'\\'),
            b'\'' | b'"' if c == quote => out.push(c),
            b'x' => {
                let v = u8::try_from(hex(inner.get(i..i + 2))?).ok()?;
                high |= v >= 0x80;
                out.push(v);
                i += 2;
            }
            b'0'..=b'7' => {
                let digits = inner
                    .get(i - 1..i + 2)
                    .filter(|d| d.bytes().all(|c| (b'0'..=b'7').contains(&c)))?;
                let v = u16::from_str_radix(digits, 8).ok()?;
                let v = u8::try_from(v).ok()?;
                high |= v >= 0x80;
                out.push(v);
                i += 2;
            }
            b'u' | b'U' => {
                let n = if c == b'u' { 4 } else { 8 };
                let v = hex(inner.get(i..i + n))?;
                let ch = char::from_u32(v)?;
                out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                i += n;
            }
            _ => return None,
        }
    }
    high.then_some(out)
}

/// Appends `bytes` as a double-quoted literal the parser reads back to the same text, bytes
/// that are not UTF-8 as markers.
fn push_literal(out: &mut String, bytes: &[u8]) {
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => out.push_str(&format!("\\U{:08x}", c as u32)),
                c => out.push(c),
            }
        }
        for &byte in chunk.invalid() {
            out.push_str(&format!("\\U{:08x}", MARKER_BASE + u32::from(byte)));
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed_string(query: &str) -> String {
        match crate::parse::parse_syntax(query).expect("parses") {
            promql_parser::parser::Expr::StringLiteral(s) => s.val,
            other => panic!("not a string: {other:?}"),
        }
    }

    #[test]
    fn byte_escapes_read_as_bytes() {
        // UTF-8 written as bytes is the character, as in Go.
        assert_eq!(parsed_string(r#""\xc3\xa5""#), "å");
        assert_eq!(parsed_string(r#"'\303\245'"#), "å");
        // A byte that is not UTF-8 stays apart, and prints as Go prints it.
        let s = parsed_string(r#""a\xc5z""#);
        assert!(!is_utf8(&s));
        assert_eq!(go_quote(&s), r#""a\xc5z""#);
        // Other escapes beside them keep their meaning.
        assert_eq!(parsed_string(r#""\"\\\n\u00e5\xc3\xa5""#), "\"\\\nåå");
        // Low byte escapes and plain text are left to the parser.
        assert_eq!(
            rewrite(r#"x{a="\x41b"} + on() `\xff`"#),
            r#"x{a="\x41b"} + on() `\xff`"#
        );
        assert_eq!(parsed_string(r#""\x41""#), "A");
        // Malformed literals stay malformed: the parser refuses them as Prometheus does.
        for bad in ["\"a\n\\xff\"", r#""\x+f\xff""#, r#""\u+0e5\xff""#, r#""\xff"#] {
            assert_eq!(rewrite(bad), bad);
            assert!(crate::parse::parse_syntax(bad).is_err(), "{bad:?}");
        }
        assert!(is_utf8(&parsed_string(r#""ÅB""#)));
    }

    #[test]
    fn go_quote_escapes_like_strconv_quote() {
        assert_eq!(go_quote("a\"b\\c\n\u{1}é"), r#""a\"b\\c\n\x01é""#);
    }
}
