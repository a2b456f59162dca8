//! Prometheus 3's trim operators of native histograms: `h </ x` keeps the observations below
//! `x`, `h >/ x` those above.
//!
//! Hand-written because the parser (promql-parser 0.11) does not read them. They bind as the
//! comparison operators do (same precedence, left-associative), so the query is parsed with
//! each written as `<` or `>`, and the operators are then put back: the binary expressions of
//! a tree, walked in order (left operand, operator, right operand), meet their operators in
//! the order of the text, so the n-th `<`/`>` of the text is the n-th such node of the walk.
//! Those nodes get an operator id of their own ([`kind`] tells them apart), which the parser
//! never produces.

use std::borrow::Cow;

use promql_parser::parser::token::{TokenType, T_GTR, T_LSS};
use promql_parser::parser::Expr;

use crate::error::QueryError;
use crate::parse::literal_end;

/// Operator ids beyond the parser's own.
const TRIM_UPPER: u16 = u16::MAX - 1;
const TRIM_LOWER: u16 = u16::MAX - 2;

/// Which trim operator `op` is: `Some(true)` for `</`, `Some(false)` for `>/`.
pub fn kind(op: &TokenType) -> Option<bool> {
    match op.id() {
        TRIM_UPPER => Some(true),
        TRIM_LOWER => Some(false),
        _ => None,
    }
}

/// The text of an operator, the trim operators included.
pub fn operator_text(op: &TokenType) -> Cow<'static, str> {
    match kind(op) {
        Some(true) => Cow::Borrowed("</"),
        Some(false) => Cow::Borrowed(">/"),
        None => Cow::Owned(op.to_string()),
    }
}

/// The query with each trim operator written as the comparison it binds like, and for every
/// `<` and `>` of that text in order, whether it was a trim operator (empty when none was).
pub fn rewrite(query: &str) -> (Cow<'_, str>, Vec<bool>) {
    let bytes = query.as_bytes();
    let mut flags = Vec::new();
    let mut trims = Vec::new();
    let mut i = 0;
    let mut braces = false;
    while i < bytes.len() {
        if let Some(end) = literal_end(bytes, i) {
            i = end;
            continue;
        }
        match bytes[i] {
            b'{' => braces = true,
            b'}' => braces = false,
            b'<' | b'>' if !braces => match bytes.get(i + 1) {
                Some(b'=') => i += 1,
                Some(b'/') => {
                    flags.push(true);
                    trims.push(i + 1);
                    i += 1;
                }
                _ => flags.push(false),
            },
            _ => {}
        }
        i += 1;
    }
    if trims.is_empty() {
        return (Cow::Borrowed(query), Vec::new());
    }
    let mut out = query.as_bytes().to_vec();
    for at in trims {
        out[at] = b' ';
    }
    // Only ASCII '/' bytes were replaced by spaces.
    (Cow::Owned(String::from_utf8(out).expect("still UTF-8")), flags)
}

/// Puts the trim operators `flags` found back into the tree parsed from the rewritten text.
pub fn restore(expr: &mut Expr, flags: &[bool]) -> Result<(), QueryError> {
    if flags.is_empty() {
        return Ok(());
    }
    let mut next = 0;
    walk(expr, flags, &mut next)?;
    if next != flags.len() {
        return Err(QueryError::BadData(
            "the trim operators </ and >/ could not be placed in this query".into(),
        ));
    }
    Ok(())
}

fn walk(expr: &mut Expr, flags: &[bool], next: &mut usize) -> Result<(), QueryError> {
    match expr {
        Expr::Binary(b) => {
            walk(&mut b.lhs, flags, next)?;
            let id = b.op.id();
            if id == T_LSS || id == T_GTR {
                let Some(&trim) = flags.get(*next) else {
                    return Err(QueryError::BadData(
                        "the trim operators </ and >/ could not be placed in this query".into(),
                    ));
                };
                *next += 1;
                if trim {
                    if b.modifier.as_ref().is_some_and(|m| m.return_bool) {
                        return Err(QueryError::BadData(
                            "bool modifier can only be used on comparison operators".into(),
                        ));
                    }
                    b.op = TokenType::new(if id == T_LSS { TRIM_UPPER } else { TRIM_LOWER });
                }
            }
            walk(&mut b.rhs, flags, next)
        }
        Expr::Aggregate(a) => {
            // The parameter comes first in the text: `topk(3 > 2, x)`.
            if let Some(p) = a.param.as_deref_mut() {
                walk(p, flags, next)?;
            }
            walk(&mut a.expr, flags, next)
        }
        Expr::Unary(u) => walk(&mut u.expr, flags, next),
        Expr::Paren(p) => walk(&mut p.expr, flags, next),
        Expr::Subquery(s) => walk(&mut s.expr, flags, next),
        Expr::Call(c) => {
            for arg in c.args.args.iter_mut() {
                walk(arg, flags, next)?;
            }
            Ok(())
        }
        Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::Extension(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(q: &str) -> Expr {
        let (text, flags) = rewrite(q);
        let mut expr = promql_parser::parser::parse(&text).unwrap();
        restore(&mut expr, &flags).unwrap();
        expr
    }

    fn ops(expr: &Expr) -> Vec<String> {
        let mut out = Vec::new();
        fn go(e: &Expr, out: &mut Vec<String>) {
            match e {
                Expr::Binary(b) => {
                    go(&b.lhs, out);
                    out.push(operator_text(&b.op).into_owned());
                    go(&b.rhs, out);
                }
                Expr::Paren(p) => go(&p.expr, out),
                Expr::Call(c) => c.args.args.iter().for_each(|a| go(a, out)),
                Expr::Aggregate(a) => {
                    if let Some(p) = &a.param {
                        go(p, out);
                    }
                    go(&a.expr, out)
                }
                _ => {}
            }
        }
        go(expr, &mut out);
        out
    }

    #[test]
    fn trim_operators_come_back_where_they_were_written() {
        assert_eq!(ops(&parsed("h </ 2")), ["</"]);
        assert_eq!(
            ops(&parsed("a > 1 < b >/ 3 or c </ (d < 4)")),
            [">", "<", ">/", "or", "</", "<"]
        );
        assert_eq!(ops(&parsed("topk(1 > bool 0, y </ 2) >= z")), [">", "</", ">="]);
        assert_eq!(ops(&parsed("histogram_count(h{a=\"</\"} </ 0.5) # >/")), ["</"]);
    }

    #[test]
    fn bool_is_refused_with_trim() {
        let (text, flags) = rewrite("h </ bool 2");
        let mut expr = promql_parser::parser::parse(&text).unwrap();
        let err = restore(&mut expr, &flags).unwrap_err().to_string();
        assert!(
            err.contains("bool modifier can only be used on comparison operators"),
            "{err}"
        );
    }
}
