//! Duration expressions (Prometheus 3's `promql-duration-expr`): arithmetic where PromQL takes
//! a duration, `rate(x[5m + 30s])`, `x[1h:step()]`, `x offset (1h / 2)`, computed before the
//! query is parsed.
//!
//! Hand-written because the parser (promql-parser 0.11) does not read them: this pass finds
//! them in the query text and replaces each with the literal duration it evaluates to, as
//! Prometheus' `durationVisitor` (`promql/durations.go`) evaluates them once the query's step
//! and range are known, and leaves everything else, plain durations included, as it is. Inside
//! brackets a range or a subquery's range and step may each be an expression; after `offset`,
//! an optional sign and one operand (a number, a duration, a parenthesised expression or a
//! call), so that `x offset 1m * 2` stays `(x offset 1m) * 2`, as Prometheus parses it.
//! Expressions compute in seconds as `float64`: numbers are seconds, `+ - * / % ^` with
//! PromQL's precedence (`^` binds tighter than a sign, and to the right), `step()` and
//! `range()` the query's step and range (0 for an instant query), `min_of(a, b)` and
//! `max_of(a, b)` as Go's `math.Min`/`Max`. A range or step must come out positive; the
//! result is truncated to milliseconds.

use std::borrow::Cow;

use crate::error::QueryError;
use crate::parse::{is_name_byte, is_operand_keyword, literal_end};

/// `query` with its duration expressions replaced by literal durations, for a query of step
/// `step_ms` over `range_ms` (both 0 for an instant query).
pub fn resolve(query: &str, step_ms: i64, range_ms: i64) -> Result<Cow<'_, str>, QueryError> {
    let bytes = query.as_bytes();
    let context = Context {
        step: step_ms as f64 / 1000.0,
        range: range_ms as f64 / 1000.0,
    };
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    let mut braces = 0usize;
    while i < bytes.len() {
        if let Some(end) = literal_end(bytes, i) {
            i = end;
            continue;
        }
        match bytes[i] {
            b'{' => {
                braces += 1;
                i += 1;
            }
            b'}' => {
                braces = braces.saturating_sub(1);
                i += 1;
            }
            b'[' if braces == 0 => {
                let Some(close) = bytes[i + 1..].iter().position(|&b| b == b']').map(|n| i + 1 + n) else {
                    break; // The parser reports it.
                };
                let inside = &query[i + 1..close];
                if let Some(replacement) = bracket(inside, &context)? {
                    let out = out.get_or_insert_with(String::new);
                    out.push_str(&query[copied..=i]);
                    out.push_str(&replacement);
                    copied = close;
                }
                i = close + 1;
            }
            b'o' | b'O' if braces == 0 && is_keyword(bytes, i, b"offset") && ends_operand(query, i) => {
                let start = i + "offset".len();
                if let Some((end, ms)) = offset(query, start, &context)? {
                    let out = out.get_or_insert_with(String::new);
                    if ms == 0 {
                        // No offset (the parser refuses `offset 0ms`).
                        out.push_str(&query[copied..i]);
                    } else {
                        out.push_str(&query[copied..start]);
                        let sign = if ms < 0 { "-" } else { "" };
                        out.push_str(&format!(" {sign}{}ms", ms.unsigned_abs()));
                    }
                    copied = end;
                    i = end;
                } else {
                    i = start;
                }
            }
            _ => i += 1,
        }
    }
    Ok(match out {
        None => Cow::Borrowed(query),
        Some(mut out) => {
            out.push_str(&query[copied..]);
            Cow::Owned(out)
        }
    })
}

struct Context {
    step: f64,
    range: f64,
}

/// Whether `word` (any case) stands at `i` as a word of its own.
fn is_keyword(bytes: &[u8], i: usize, word: &[u8]) -> bool {
    bytes.len() >= i + word.len()
        && bytes[i..i + word.len()].eq_ignore_ascii_case(word)
        && (i == 0 || !is_name_byte(bytes[i - 1]))
        && bytes.get(i + word.len()).is_none_or(|&b| !is_name_byte(b))
}

/// Whether the text before `i` ends an operand (a selector, a subquery, an `@` time), so
/// that an `offset` at `i` is the modifier and not a metric named `offset`: it ends with a
/// name that is not an operator or modifier keyword, a number, `}`, `]` or `)`.
fn ends_operand(query: &str, i: usize) -> bool {
    let before = query[..i].trim_end();
    let Some(&last) = before.as_bytes().last() else {
        return false;
    };
    if matches!(last, b'}' | b']' | b')') {
        return true;
    }
    if !is_name_byte(last) {
        return false;
    }
    let word_start = before.bytes().rposition(|b| !is_name_byte(b)).map_or(0, |p| p + 1);
    !is_operand_keyword(&before[word_start..])
}

/// Whether `text` is a plain duration the parser reads itself: `5m`, `1h30m`, `500ms`.
fn is_plain_duration(text: &str) -> bool {
    let t = text.trim();
    let mut rest = t;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "s", "m", "h", "d", "w", "y"]
            .iter()
            .find(|u| rest.starts_with(**u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

/// The replacement of a bracket's content, when it holds an expression.
fn bracket(inside: &str, context: &Context) -> Result<Option<String>, QueryError> {
    let (range, step) = match top_level_colon(inside) {
        Some(at) => (&inside[..at], Some(&inside[at + 1..])),
        None => (inside, None),
    };
    let plain = |part: &str| is_plain_duration(part) || part.trim().is_empty();
    if plain(range) && step.is_none_or(plain) {
        return Ok(None);
    }
    let positive = |part: &str| -> Result<String, QueryError> {
        if part.trim().is_empty() {
            return Ok(String::new());
        }
        let ms = evaluate(part, context, false)?;
        Ok(format!("{ms}ms"))
    };
    let mut replacement = positive(range)?;
    if let Some(step) = step {
        replacement.push(':');
        replacement.push_str(&positive(step)?);
    }
    Ok(Some(replacement))
}

/// The place of the `:` between a subquery's range and step, outside parentheses.
fn top_level_colon(text: &str) -> Option<usize> {
    let mut depth = 0i32;
    for (i, b) in text.bytes().enumerate() {
        match b {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b':' if depth == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

/// After `offset` at `start`: the end of its operand and its milliseconds, when the operand
/// is an expression.
fn offset(query: &str, start: usize, context: &Context) -> Result<Option<(usize, i64)>, QueryError> {
    let mut lexer = Lexer::new(query, start);
    let mut signs = 0;
    while matches!(lexer.peek(), Some(Token::Op(b'+' | b'-'))) {
        lexer.next();
        signs += 1;
    }
    match lexer.next() {
        Some(Token::Number(_)) => {}
        // A plain, possibly signed, duration: the parser reads it.
        Some(Token::Duration(_)) if signs <= 1 => return Ok(None),
        Some(Token::Duration(_)) => {}
        Some(Token::Open) => lexer.skip_rest_of_group()?,
        Some(Token::Ident(_)) if lexer.peek() == Some(Token::Open) => {
            lexer.next();
            lexer.skip_rest_of_group()?;
        }
        // Not a duration: left to the parser.
        _ => return Ok(None),
    }
    Ok(Some((lexer.pos, evaluate(&query[start..lexer.pos], context, true)?)))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Token<'a> {
    Number(f64),
    /// A duration literal, in seconds.
    Duration(f64),
    Ident(&'a str),
    Op(u8),
    Open,
    Close,
    Comma,
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str, pos: usize) -> Self {
        Lexer { text, pos }
    }

    fn skip_space(&mut self) {
        let bytes = self.text.as_bytes();
        while self.pos < bytes.len() && bytes[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<Token<'a>> {
        let saved = self.pos;
        let token = self.next();
        self.pos = saved;
        token
    }

    fn next(&mut self) -> Option<Token<'a>> {
        self.skip_space();
        let bytes = self.text.as_bytes();
        let b = *bytes.get(self.pos)?;
        let start = self.pos;
        let token = match b {
            b'(' => Token::Open,
            b')' => Token::Close,
            b',' => Token::Comma,
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' => Token::Op(b),
            b'0'..=b'9' | b'.' => {
                let mut end = start
                    + bytes[start..]
                        .iter()
                        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'.')
                        .count();
                // A signed exponent: `1.5e-3`.
                if matches!(bytes[end - 1], b'e' | b'E')
                    && matches!(bytes.get(end), Some(b'+' | b'-'))
                    && bytes.get(end + 1).is_some_and(u8::is_ascii_digit)
                {
                    end += 1 + bytes[end + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
                }
                let word = &self.text[start..end];
                self.pos = end;
                let hex = word.strip_prefix("0x").or_else(|| word.strip_prefix("0X"));
                return Some(match (hex, word.parse::<f64>()) {
                    _ if is_plain_duration(word) => Token::Duration(duration_seconds(word)),
                    (Some(digits), _) => match i64::from_str_radix(digits, 16) {
                        Ok(n) => Token::Number(n as f64),
                        Err(_) => Token::Ident(word),
                    },
                    (None, Ok(n)) if !word.contains(['n', 'N', 'i', 'I']) => Token::Number(n),
                    _ => Token::Ident(word),
                });
            }
            b if is_name_byte(b) => {
                let len = bytes[start..].iter().take_while(|b| is_name_byte(**b)).count();
                self.pos = start + len;
                return Some(Token::Ident(&self.text[start..start + len]));
            }
            _ => return None,
        };
        self.pos += 1;
        Some(token)
    }

    /// Skips to just past the `)` closing a group whose `(` was the last token.
    fn skip_rest_of_group(&mut self) -> Result<(), QueryError> {
        let mut depth = 1;
        while depth > 0 {
            match self.next() {
                Some(Token::Open) => depth += 1,
                Some(Token::Close) => depth -= 1,
                Some(_) => {}
                None => return Err(bad("unclosed parenthesis")),
            }
        }
        Ok(())
    }
}

/// Seconds in a plain duration such as `1h30m`.
fn duration_seconds(text: &str) -> f64 {
    let mut ms: f64 = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let n: f64 = rest[..digits].parse().unwrap_or(0.0);
        rest = &rest[digits..];
        let (unit, factor) = [
            ("ms", 1.0),
            ("s", 1e3),
            ("m", 60e3),
            ("h", 3600e3),
            ("d", 86400e3),
            ("w", 604800e3),
            ("y", 31536000e3),
        ]
        .into_iter()
        .find(|(u, _)| rest.starts_with(u))
        .unwrap_or(("", 0.0));
        rest = &rest[unit.len()..];
        ms += n * factor;
        if unit.is_empty() {
            break;
        }
    }
    ms / 1000.0
}

fn bad(message: &str) -> QueryError {
    QueryError::BadData(format!("invalid duration expression: {message}"))
}

/// The milliseconds `text` evaluates to; it must be positive unless `negative_allowed`.
fn evaluate(text: &str, context: &Context, negative_allowed: bool) -> Result<i64, QueryError> {
    let mut parser = Parser {
        lexer: Lexer::new(text, 0),
        context,
        depth: 0,
    };
    let seconds = parser.expression(0)?;
    if parser.lexer.next().is_some() {
        return Err(bad(&format!("unexpected text in {:?}", text.trim())));
    }
    if !seconds.is_finite() {
        return Err(bad("duration is NaN or infinite"));
    }
    if seconds <= 0.0 && !negative_allowed {
        return Err(bad("duration must be greater than 0"));
    }
    // Go's time.Duration bounds, in seconds.
    if seconds.abs() > 9_223_372_036.854_775 {
        return Err(bad("duration is out of range"));
    }
    // As Go's time.Duration(seconds*1000) * time.Millisecond: truncated.
    Ok((seconds * 1000.0) as i64)
}

struct Parser<'a, 'c> {
    lexer: Lexer<'a>,
    context: &'c Context,
    /// Levels of expressions being parsed: bounded, so that no query overflows the stack.
    depth: usize,
}

/// The deepest nesting a duration expression may have.
const MAX_DEPTH: usize = 64;

const ADD: u8 = 1;
const MUL: u8 = 2;
const POW: u8 = 3;

fn precedence(op: u8) -> u8 {
    match op {
        b'+' | b'-' => ADD,
        b'^' => POW,
        _ => MUL,
    }
}

impl Parser<'_, '_> {
    /// An expression of operators binding at least as tight as `min`.
    fn expression(&mut self, min: u8) -> Result<f64, QueryError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(bad(&format!("nested more than {MAX_DEPTH} levels deep")));
        }
        let result = self.expression_here(min);
        self.depth -= 1;
        result
    }

    fn expression_here(&mut self, min: u8) -> Result<f64, QueryError> {
        let mut lhs = self.unary()?;
        while let Some(Token::Op(op)) = self.lexer.peek() {
            let p = precedence(op);
            if p < min {
                break;
            }
            self.lexer.next();
            // `^` is right-associative; the others left.
            let rhs = self.expression(if op == b'^' { p } else { p + 1 })?;
            lhs = match op {
                b'+' => lhs + rhs,
                b'-' => lhs - rhs,
                b'*' => lhs * rhs,
                b'/' if rhs == 0.0 => return Err(bad("division by zero")),
                b'/' => lhs / rhs,
                b'%' if rhs == 0.0 => return Err(bad("modulo by zero")),
                b'%' => lhs % rhs,
                _ => lhs.powf(rhs),
            };
        }
        Ok(lhs)
    }

    /// A sign applies to what binds tighter than `*`: `-2 ^ 2` is -4, `-2 * 2` is (-2) * 2.
    fn unary(&mut self) -> Result<f64, QueryError> {
        match self.lexer.peek() {
            Some(Token::Op(op @ (b'+' | b'-'))) => {
                self.lexer.next();
                let v = self.expression(POW)?;
                Ok(if op == b'-' { -v } else { v })
            }
            _ => self.operand(),
        }
    }

    fn operand(&mut self) -> Result<f64, QueryError> {
        match self.lexer.next() {
            Some(Token::Number(n)) | Some(Token::Duration(n)) => Ok(n),
            Some(Token::Open) => {
                let v = self.expression(0)?;
                match self.lexer.next() {
                    Some(Token::Close) => Ok(v),
                    _ => Err(bad("expected )")),
                }
            }
            Some(Token::Ident(name)) => {
                if self.lexer.next() != Some(Token::Open) {
                    return Err(bad(&format!("unexpected {name:?}")));
                }
                let mut args = Vec::new();
                if self.lexer.peek() == Some(Token::Close) {
                    self.lexer.next();
                } else {
                    loop {
                        args.push(self.expression(0)?);
                        match self.lexer.next() {
                            Some(Token::Comma) => continue,
                            Some(Token::Close) => break,
                            _ => return Err(bad("expected , or )")),
                        }
                    }
                }
                match (name.to_ascii_lowercase().as_str(), args.as_slice()) {
                    ("step", []) => Ok(self.context.step),
                    ("range", []) => Ok(self.context.range),
                    ("min_of", [a, b]) => Ok(crate::gomath::min(*a, *b)),
                    ("max_of", [a, b]) => Ok(crate::gomath::max(*a, *b)),
                    _ => Err(bad(&format!("{name}() with {} arguments", args.len()))),
                }
            }
            _ => Err(bad("expected a number, a duration, ( or a function")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(q: &str) -> String {
        resolve(q, 10_000, 10_000).unwrap().into_owned()
    }

    #[test]
    fn plain_durations_and_other_text_are_left_alone() {
        for q in [
            "rate(x[5m])",
            "x[1h30m:1m]",
            "x[5m:]",
            "x offset 5m",
            "x offset -5m",
            r#"x{a="[1+1]", offset="offset (1m)"}"#,
            "offset",
            "sum(offset) by (job)",
            // A metric named offset, after an operator, a parenthesis or a keyword.
            "sum(offset + 0) by (job)",
            "foo / offset - 1",
            "foo and offset - (1)",
            "x offset 5m + offset",
        ] {
            assert_eq!(r(q), q);
        }
    }

    #[test]
    fn expressions_become_milliseconds_as_prometheus_computes_them() {
        assert_eq!(r("changes(x[26m+4m])"), "changes(x[1800000ms])");
        assert_eq!(r("x[1800]"), "x[1800000ms]");
        assert_eq!(r("x[1.5e-3*1000]"), "x[1500ms]");
        assert_eq!(r("x[0x10]"), "x[16000ms]");
        assert_eq!(r("x[30m1s-30m1s % 1m]"), "x[1800000ms]");
        assert_eq!(r("x[1+(STep()-5)*2]"), "x[11000ms]");
        assert_eq!(r("x[29s+1s:5s+5s]"), "x[30000ms:10000ms]");
        assert_eq!(r("x[max_of(min_of(step()+1,1h),1ms)]"), "x[11000ms]");
        // After offset, one signed operand: the rest belongs to the query.
        assert_eq!(r("x offset 100 + 2"), "x offset 100000ms + 2");
        assert_eq!(r("x offset (100 + 2)"), "x offset 102000ms");
        assert_eq!(r("x offset -2 ^ 2"), "x offset -2000ms ^ 2");
        assert_eq!(r("x offset (-2 ^ 2)"), "x offset -4000ms");
        assert_eq!(r("x offset -step()*2"), "x offset -10000ms*2");
        assert_eq!(r("x offset -(min_of(step(), 1s))+8000"), "x offset -1000ms+8000");
        assert_eq!(r("x offset range()"), "x offset 10000ms");
        assert_eq!(resolve("x offset range() + 1", 0, 0).unwrap(), "x  + 1");
    }

    #[test]
    fn bad_durations_are_errors() {
        let deep = format!("x[{}1m{}]", "(".repeat(100_000), ")".repeat(100_000));
        let signs = format!("x[{}1m]", "-".repeat(100_000));
        let powers = format!("x[1{}]", "^1".repeat(100_000));
        for q in [
            "x[1m-1m]",
            "x[step()]",
            "x[1/0]",
            "x[1m % 0]",
            "x[(1m]",
            "x[foo(1)]",
            "x offset (1e400)",
            &deep,
            &signs,
            &powers,
        ] {
            let result = resolve(q, 0, 0);
            assert!(
                matches!(result, Err(QueryError::BadData(ref m)) if m.starts_with("invalid duration expression")),
                "{}: {result:?}",
                &q[..q.len().min(40)]
            );
        }
    }
}
