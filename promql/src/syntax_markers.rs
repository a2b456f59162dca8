//! What Prometheus 3 reads in selectors and promql-parser 0.11 does not, carried through the
//! parser as matchers on reserved labels:
//! - the `anchored` and `smoothed` modifiers of selectors (the extended range selectors):
//!   `increase(x[5m] anchored)`, `rate(x[5m] smoothed)`, `x smoothed`;
//! - `info()`'s label selector whose matchers all match the empty value
//!   (`info(x, {data=~".*"})`), which the parser refuses as it refuses such a selector anywhere.
//!
//! Hand-written because the parser does not read them. Before parsing, this pass finds each
//! modifier keyword in the query text where it follows an operand, and moves it into the
//! selector it modifies as a matcher on [`MODIFIER_LABEL`]; it adds a matcher on
//! [`INFO_SELECTOR_LABEL`] to the label selector of every `info` call. The parser reads them as
//! any other matcher; no user can mean them (`__` names are reserved). Everything that reads a
//! selector's matchers for the storage leaves them out ([`without_modifier`]); the engine asks
//! [`mode`] how a selector reads its samples. As Prometheus' grammar, a modifier keyword may
//! follow `offset` and `@`, and applies only to a selector: after a subquery or any other
//! expression it is an error with Prometheus' message.

use std::borrow::Cow;

use promql_parser::label::Matcher;
use promql_parser::parser::VectorSelector;

use crate::error::QueryError;
use crate::parse::{is_name_byte, is_operand_keyword, literal_end};

/// The label of the matcher that carries a selector's modifier through the parser.
pub const MODIFIER_LABEL: &str = "__promscale_range_modifier__";

/// How a selector reads samples around its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The samples in the window (or the lookback), as always.
    Plain,
    /// The window's start is the value at its left edge: the last sample before it, within
    /// the lookback.
    Anchored,
    /// Values at the window's edges are interpolated from the samples around them, within
    /// the lookback on both sides.
    Smoothed,
}

impl Mode {
    fn keyword(self) -> &'static str {
        match self {
            Mode::Plain => "",
            Mode::Anchored => "anchored",
            Mode::Smoothed => "smoothed",
        }
    }
}

/// The modifier of a selector.
pub fn mode(vs: &VectorSelector) -> Mode {
    match vs.matchers.matchers.iter().find(|m| m.name == MODIFIER_LABEL) {
        Some(m) if m.value == "anchored" => Mode::Anchored,
        Some(m) if m.value == "smoothed" => Mode::Smoothed,
        _ => Mode::Plain,
    }
}

/// Whether a matcher is the one that carries a modifier.
pub fn is_modifier(m: &Matcher) -> bool {
    m.name == MODIFIER_LABEL || m.name == INFO_SELECTOR_LABEL
}

/// The label of the matcher added to `info()`'s label selector, so that the parser accepts
/// one whose matchers all match the empty value (`{data=~".*"}`), as Prometheus does there.
pub const INFO_SELECTOR_LABEL: &str = "__promscale_info_selector__";

/// The matchers of a selector that select series: all but the markers'.
pub fn without_modifier(vs: &VectorSelector) -> impl Iterator<Item = &Matcher> {
    vs.matchers.matchers.iter().filter(|m| !is_modifier(m))
}

/// A token of query text outside label matchers: a run of name bytes (names, keywords,
/// numbers, durations), a group in `{}` or `[]`, or one other byte.
#[derive(Clone, Copy, Debug)]
enum Token {
    Word(usize, usize),
    Group(u8, usize, usize),
    Byte(u8),
    Literal,
}

fn tokens(query: &str) -> Vec<Token> {
    let bytes = query.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if let Some(end) = literal_end(bytes, i) {
            // A comment is whitespace; a string a value.
            if bytes[i] != b'#' {
                out.push(Token::Literal);
            }
            i = end;
            continue;
        }
        let b = bytes[i];
        if is_name_byte(b) || b == b'.' {
            let end = bytes[i..]
                .iter()
                .position(|&b| !(is_name_byte(b) || b == b'.'))
                .map_or(bytes.len(), |n| i + n);
            out.push(Token::Word(i, end));
            i = end;
        } else if b == b'{' || b == b'[' {
            let close = if b == b'{' { b'}' } else { b']' };
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != close {
                j = literal_end(bytes, j).unwrap_or(j + 1);
            }
            // Unclosed: the parser reports it.
            out.push(Token::Group(b, i, j.min(bytes.len())));
            i = j + 1;
        } else {
            if !b.is_ascii_whitespace() {
                out.push(Token::Byte(b));
            }
            i += 1;
        }
    }
    out
}

/// `query` with each `anchored` and `smoothed` keyword moved into the selector it modifies.
pub fn rewrite(query: &str) -> Result<Cow<'_, str>, QueryError> {
    let lower = |s: usize, e: usize| query[s..e].to_ascii_lowercase();
    let tokens = tokens(query);
    // (byte offset, text to insert) and (keyword start, end) to blank, in text order.
    let mut inserts: Vec<(usize, String, Mode)> = Vec::new();
    let mut blanks = Vec::new();
    // Indices of the tokens read as modifiers.
    let mut modifiers = Vec::new();
    for (k, token) in tokens.iter().enumerate() {
        let Token::Word(s, e) = *token else { continue };
        if &query[s..e] == "info" {
            if let Some(at) = info_selector_end(&tokens, k, query) {
                inserts.push(at);
            }
            continue;
        }
        let mode = match lower(s, e).as_str() {
            "anchored" => Mode::Anchored,
            "smoothed" => Mode::Smoothed,
            _ => continue,
        };
        if k == 0 || !ends_operand(query, &tokens[k - 1]) {
            continue; // A name: a metric or a label called so.
        }
        let keyword = mode.keyword();
        let not_implemented = || QueryError::BadData(format!("{keyword} modifier not implemented"));
        // Back over `offset` and `@` modifiers, then an optional range, to the selector.
        let mut j = k - 1;
        loop {
            let word = |i: usize| match tokens.get(i) {
                Some(Token::Word(s, e)) => Some(lower(*s, *e)),
                _ => None,
            };
            let byte = |i: usize, b: u8| matches!(tokens.get(i), Some(Token::Byte(x)) if *x == b);
            let sign = |i: usize| byte(i, b'-') || byte(i, b'+');
            let back = if modifiers.contains(&j) {
                1 // Another modifier of the same selector.
            } else if j >= 1 && word(j).is_some() && word(j - 1).as_deref() == Some("offset") {
                2
            } else if j >= 2 && word(j).is_some() && sign(j - 1) && word(j - 2).as_deref() == Some("offset") {
                3
            } else if j >= 1 && word(j).is_some() && byte(j - 1, b'@') {
                2
            } else if j >= 2 && word(j).is_some() && sign(j - 1) && byte(j - 2, b'@') {
                3
            } else if j >= 3
                && byte(j, b')')
                && byte(j - 1, b'(')
                && matches!(word(j - 2).as_deref(), Some("start" | "end"))
                && byte(j - 3, b'@')
            {
                4
            } else {
                break;
            };
            // A modifier with nothing before it modifies nothing.
            j = j.checked_sub(back).ok_or_else(not_implemented)?;
        }
        if let Token::Group(b'[', s, e) = tokens[j] {
            if query[s + 1..e].contains(':') {
                return Err(QueryError::BadData(format!(
                    "{keyword} modifier is not supported for subqueries"
                )));
            }
            if j == 0 {
                return Err(not_implemented());
            }
            j -= 1;
        }
        let insert = match tokens[j] {
            Token::Group(b'{', s, e) => {
                let inside = query[s + 1..e].trim_end();
                let comma = if inside.trim().is_empty() || inside.ends_with(',') {
                    ""
                } else {
                    ","
                };
                (e, format!("{comma}{MODIFIER_LABEL}=\"{keyword}\""), mode)
            }
            Token::Word(s, e) if !is_operand_keyword(&query[s..e]) => {
                (e, format!("{{{MODIFIER_LABEL}=\"{keyword}\"}}"), mode)
            }
            _ => return Err(not_implemented()),
        };
        match inserts.iter().find(|(at, _, _)| *at == insert.0) {
            Some((_, _, m)) if *m != mode => {
                return Err(QueryError::BadData(
                    "anchored and smoothed modifiers cannot be used together".into(),
                ))
            }
            Some(_) => {}
            None => inserts.push(insert),
        }
        blanks.push((s, e));
        modifiers.push(k);
    }
    if blanks.is_empty() && inserts.is_empty() {
        return Ok(Cow::Borrowed(query));
    }
    let mut edits: Vec<(usize, usize, String)> = inserts.into_iter().map(|(at, text, _)| (at, at, text)).collect();
    edits.extend(blanks.into_iter().map(|(s, e)| (s, e, String::new())));
    edits.sort_by_key(|&(s, _, _)| s);
    let mut out = String::with_capacity(query.len() + 64 * edits.len());
    let mut copied = 0;
    for (s, e, text) in edits {
        out.push_str(&query[copied..s]);
        out.push_str(&text);
        copied = e;
    }
    out.push_str(&query[copied..]);
    Ok(Cow::Owned(out))
}

/// Where to mark the label selector of the `info` call whose name is token `k` (the second
/// argument, when it is a `{...}` group), and the marker to insert there.
fn info_selector_end(tokens: &[Token], k: usize, query: &str) -> Option<(usize, String, Mode)> {
    if !matches!(tokens.get(k + 1), Some(Token::Byte(b'('))) {
        return None;
    }
    let mut depth = 0usize;
    for (i, token) in tokens.iter().enumerate().skip(k + 2) {
        match token {
            Token::Byte(b'(') => depth += 1,
            Token::Byte(b')') if depth == 0 => return None,
            Token::Byte(b')') => depth -= 1,
            Token::Byte(b',') if depth == 0 => {
                let Some(&Token::Group(b'{', s, e)) = tokens.get(i + 1) else {
                    return None;
                };
                let inside = query[s + 1..e].trim_end();
                let comma = if inside.trim().is_empty() || inside.ends_with(',') {
                    ""
                } else {
                    ","
                };
                return Some((e, format!("{comma}{INFO_SELECTOR_LABEL}=\"any\""), Mode::Plain));
            }
            _ => {}
        }
    }
    None
}

/// Whether the text up to and including `token` ends an operand, so that a keyword after it
/// is a modifier and not a name.
fn ends_operand(query: &str, token: &Token) -> bool {
    match *token {
        Token::Group(..) | Token::Literal => true,
        Token::Byte(b) => b == b')',
        Token::Word(s, e) => !is_operand_keyword(&query[s..e]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(q: &str) -> String {
        rewrite(q).unwrap().into_owned()
    }

    #[test]
    fn keywords_move_into_their_selector() {
        let m = MODIFIER_LABEL;
        assert_eq!(
            rewritten("increase(x[1m] anchored)"),
            format!("increase(x{{{m}=\"anchored\"}}[1m] )")
        );
        assert_eq!(
            rewritten("rate(x{a=\"}\"}[1m] offset -5m smoothed)"),
            format!("rate(x{{a=\"}}\",{m}=\"smoothed\"}}[1m] offset -5m )")
        );
        assert_eq!(
            rewritten("x @ 100 SMOOTHED + 0"),
            format!("x{{{m}=\"smoothed\"}} @ 100  + 0")
        );
        assert_eq!(
            rewritten("{__name__=\"x\",} @ end() smoothed"),
            format!("{{__name__=\"x\",{m}=\"smoothed\"}} @ end() ")
        );
    }

    #[test]
    fn info_selectors_are_marked_so_that_any_matchers_parse() {
        let l = INFO_SELECTOR_LABEL;
        assert_eq!(
            rewritten("info(rate(x[5m]), {data=~\".*\"})"),
            format!("info(rate(x[5m]), {{data=~\".*\",{l}=\"any\"}})")
        );
        assert_eq!(rewritten("info(x, {})"), format!("info(x, {{{l}=\"any\"}})"));
        // Only the second argument, and only a label selector.
        assert_eq!(rewritten("info(x)"), "info(x)");
        assert_eq!(rewritten("info(f(a, b), target_info)"), "info(f(a, b), target_info)");
        assert_eq!(rewritten("sum(info)"), "sum(info)");
    }

    #[test]
    fn names_stay_names() {
        for q in [
            "anchored",
            "sum by (anchored) (smoothed)",
            "x and smoothed",
            "x offset 5m + anchored",
            "label_replace(x, \"a\", \"anchored\", \"b\", \"\")",
            "x # smoothed",
            "smoothed",
        ] {
            assert_eq!(rewritten(q), q);
        }
    }

    #[test]
    fn misplaced_keywords_are_refused_as_prometheus_does() {
        let err = |q: &str| rewrite(q).unwrap_err().to_string();
        assert!(err("x[5m:1m] anchored").contains("anchored modifier is not supported for subqueries"));
        assert!(err("rate(x[5m]) smoothed").contains("smoothed modifier not implemented"));
        assert!(err("x anchored smoothed").contains("cannot be used together"));
        assert!(err("(x) anchored").contains("anchored modifier not implemented"));
        assert!(rewritten("smoothed anchored").starts_with(&format!("smoothed{{{MODIFIER_LABEL}=\"anchored\"}}")));
    }
}
