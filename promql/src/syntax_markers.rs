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
//! selector's matchers for the storage leaves them out ([`without_markers`]); the engine asks
//! [`mode`] how a selector reads its samples. As Prometheus' grammar, a modifier keyword may
//! follow `offset` and `@`, and applies only to a selector: after a subquery or any other
//! expression it is an error with Prometheus' message.

use std::borrow::Cow;
use std::collections::HashMap;

use promql_parser::label::Matcher;
use promql_parser::parser::VectorSelector;

use crate::error::QueryError;
use crate::parse::{is_operand_keyword, QueryTokens, Token};

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
    /// The keyword as written in queries (empty for [`Mode::Plain`]).
    pub fn keyword(self) -> &'static str {
        match self {
            Mode::Plain => "",
            Mode::Anchored => "anchored",
            Mode::Smoothed => "smoothed",
        }
    }
}

/// The modifier of a selector.
pub fn mode(vs: &VectorSelector) -> Mode {
    match vs
        .matchers
        .matchers
        .iter()
        .find(|m| is_marker(m) && m.name == MODIFIER_LABEL)
    {
        Some(m) if m.value == "anchored" => Mode::Anchored,
        Some(m) if m.value == "smoothed" => Mode::Smoothed,
        _ => Mode::Plain,
    }
}

/// Whether a matcher is one this pass added: a modifier's or an `info` selector's.
pub fn is_marker(m: &Matcher) -> bool {
    matches!(m.op, promql_parser::label::MatchOp::Equal)
        && match m.name.as_str() {
            MODIFIER_LABEL => m.value == "anchored" || m.value == "smoothed",
            INFO_SELECTOR_LABEL => m.value == "any",
            _ => false,
        }
}

/// The label of the matcher added to `info()`'s label selector, so that the parser accepts
/// one whose matchers all match the empty value (`{data=~".*"}`), as Prometheus does there.
pub const INFO_SELECTOR_LABEL: &str = "__promscale_info_selector__";

/// The matchers of a selector that select series: all but the markers'.
pub fn without_markers(vs: &VectorSelector) -> impl Iterator<Item = &Matcher> {
    vs.matchers.matchers.iter().filter(|m| !is_marker(m))
}

/// `query` with each `anchored` and `smoothed` keyword moved into the selector it modifies.
pub fn rewrite(query: &str) -> Result<Cow<'_, str>, QueryError> {
    let lower = |s: usize, e: usize| query[s..e].to_ascii_lowercase();
    let tokens = QueryTokens::new(query);
    // (byte offset, text to insert) and (keyword start, end) to blank.
    let mut inserts: Vec<(usize, String)> = Vec::new();
    // The mode of each selector given one, by where its marker goes.
    let mut modes: HashMap<usize, Mode> = HashMap::new();
    let mut blanks = Vec::new();
    // Of each token read as a modifier, where the marker of its selector goes.
    let mut modifiers: HashMap<usize, usize> = HashMap::new();
    for (k, token) in tokens.iter().enumerate() {
        let Token::Word(s, e) = *token else { continue };
        if &query[s..e] == "info" {
            if let Some((at, text)) = info_selector_end(&tokens, k, query) {
                inserts.push((at, text));
            }
            continue;
        }
        let mode = match lower(s, e).as_str() {
            "anchored" => Mode::Anchored,
            "smoothed" => Mode::Smoothed,
            _ => continue,
        };
        if k == 0 || !tokens.ends_operand(k - 1) {
            continue; // A name: a metric or a label called so.
        }
        let keyword = mode.keyword();
        let not_implemented = || QueryError::BadData(format!("{keyword} modifier not implemented"));
        // Back over `offset` and `@` modifiers, then an optional range, to the selector (or
        // to a modifier of the same selector, which knows where it is).
        let mut j = k - 1;
        let mut known = None;
        loop {
            let word = |i: usize| match tokens.get(i) {
                Some(Token::Word(s, e)) => Some(lower(*s, *e)),
                _ => None,
            };
            let byte = |i: usize, b: u8| matches!(tokens.get(i), Some(Token::Byte(x, _)) if *x == b);
            let sign = |i: usize| byte(i, b'-') || byte(i, b'+');
            if let Some(&at) = modifiers.get(&j) {
                known = Some(at);
                break;
            }
            let back = if j >= 1 && word(j).is_some() && word(j - 1).as_deref() == Some("offset") {
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
        let (at, marker) = match known {
            Some(at) => (at, None),
            None => {
                let (at, marker) = selector_end(query, &tokens, j, keyword)?;
                (at, Some(marker))
            }
        };
        match (modes.get(&at), marker) {
            (Some(&m), _) if m != mode => {
                return Err(QueryError::BadData(
                    "anchored and smoothed modifiers cannot be used together".into(),
                ))
            }
            (None, Some(marker)) => {
                modes.insert(at, mode);
                inserts.push((at, marker));
            }
            _ => {}
        }
        blanks.push((s, e));
        modifiers.insert(k, at);
    }
    if blanks.is_empty() && inserts.is_empty() {
        return Ok(Cow::Borrowed(query));
    }
    let mut edits: Vec<(usize, usize, String)> = inserts.into_iter().map(|(at, text)| (at, at, text)).collect();
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

/// Where the marker of a modifier goes in the selector that ends at token `j` (after an
/// optional range), and the marker: inside its braces, or as braces after its name.
fn selector_end(query: &str, tokens: &[Token], mut j: usize, keyword: &str) -> Result<(usize, String), QueryError> {
    let not_implemented = || QueryError::BadData(format!("{keyword} modifier not implemented"));
    if let Token::Group(b'[', s, e) = tokens[j] {
        if query[s + 1..e].contains(':') {
            return Err(QueryError::BadData(format!(
                "{keyword} modifier is not supported for subqueries"
            )));
        }
        j = j.checked_sub(1).ok_or_else(not_implemented)?;
    }
    match tokens[j] {
        Token::Group(b'{', s, e) => Ok(marker_in_braces(query, (s, e), MODIFIER_LABEL, keyword)),
        Token::Word(s, e)
            if query.as_bytes()[s].is_ascii_alphabetic() || matches!(query.as_bytes()[s], b'_' | b':') =>
        {
            if is_operand_keyword(&query[s..e]) || query[s..e].contains('.') {
                return Err(not_implemented());
            }
            Ok((e, format!("{{{MODIFIER_LABEL}=\"{keyword}\"}}")))
        }
        _ => Err(not_implemented()),
    }
}

/// The marker `label="value"` as the last matcher of the braces at `(open, close)` of
/// `query`, and where it goes: before the closing brace, after a comma unless there is one
/// or nothing before it.
fn marker_in_braces(query: &str, (open, close): (usize, usize), label: &str, value: &str) -> (usize, String) {
    let inside = query[open + 1..close].trim_end();
    let comma = if inside.trim().is_empty() || inside.ends_with(',') {
        ""
    } else {
        ","
    };
    (close, format!("{comma}{label}=\"{value}\""))
}

/// Where to mark the label selector of the `info` call whose name is token `k` (the second
/// argument, when it is a `{...}` group), and the marker to insert there.
fn info_selector_end(tokens: &[Token], k: usize, query: &str) -> Option<(usize, String)> {
    if !matches!(tokens.get(k + 1), Some(Token::Byte(b'(', _))) {
        return None;
    }
    let mut depth = 0usize;
    for (i, token) in tokens.iter().enumerate().skip(k + 2) {
        match token {
            Token::Byte(b'(', _) => depth += 1,
            Token::Byte(b')', _) if depth == 0 => return None,
            Token::Byte(b')', _) => depth -= 1,
            Token::Byte(b',', _) if depth == 0 => {
                let Some(&Token::Group(b'{', s, e)) = tokens.get(i + 1) else {
                    return None;
                };
                return Some(marker_in_braces(query, (s, e), INFO_SELECTOR_LABEL, "any"));
            }
            _ => {}
        }
    }
    None
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
        assert!(err("1 anchored").contains("anchored modifier not implemented"));
    }

    #[test]
    fn many_keywords_cost_little() {
        // One selector with thousands of modifiers: each finds the selector from the one
        // before it, not by walking back over all of them.
        let q = format!("x{}", " anchored".repeat(20_000));
        let out = rewritten(&q);
        assert_eq!(out.matches(MODIFIER_LABEL).count(), 1);
    }

    #[test]
    fn names_after_matching_modifiers_stay_names() {
        for q in [
            "x + ignoring(a) anchored",
            "x / on(a) group_left(b) smoothed",
            "x + fill(0) anchored",
        ] {
            assert_eq!(rewritten(q), q);
        }
        assert!(rewritten("smoothed anchored").starts_with(&format!("smoothed{{{MODIFIER_LABEL}=\"anchored\"}}")));
    }
}
