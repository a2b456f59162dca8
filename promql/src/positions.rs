//! Where each expression of a parsed query starts in the query text, as Prometheus 3 reports it
//! after every warning and info (`... (1:25)`: line and byte column of the start of the
//! expression the annotation is about).
//!
//! Hand-written because promql-parser keeps no positions. The tree is walked in source order
//! beside the tokens of the text the user sent (before the rewriting passes of
//! [`crate::parse`], which change neither the tree's shape nor the order of its nodes): each
//! node starts at the next token that can start it — a selector at its metric name or `{`, a
//! call at its name, an aggregation at its operator, a parenthesis at `(`, a literal at its
//! text (a sign before a number included, as Prometheus folds it), a binary operation,
//! subquery or range selector where its first operand starts. What sits between operands and
//! starts no node is stepped over: label lists of `by`, `without`, `on`, `ignoring`,
//! `group_left`, `group_right` and `fill*`, ranges, label matchers, `offset` and `@` with their
//! values. A node not found (no such text, which would be a bug) has no position, and the
//! annotation goes without one rather than with a wrong one.
//!
//! Two refinements follow Prometheus' tree, which differs from promql-parser's there:
//! promql-parser drops a unary `+` that Prometheus keeps as a node of its own (except before a
//! number, where both fold it), so an argument written `+x` starts at the `+` when an
//! annotation is about the argument ([`Place::outer`]) and at `x` when it is about `x` itself;
//! a sign before a number raised to a power (`-1 ^ 2`) belongs to the power, not the number.
//! And each node gets its rank in the order Prometheus evaluates (children before parents,
//! left before right), since of equal messages Prometheus keeps the one it added last.

use std::collections::HashMap;

use promql_parser::parser::{Expr, VectorSelector};

use crate::parse::{is_name_byte, QueryTokens, Token};

/// Where expressions start, by their address in the tree (as the evaluator keys them).
#[derive(Debug, Default)]
pub struct Positions {
    places: HashMap<usize, Place>,
}

/// Where one node starts, and when Prometheus evaluates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// The byte offset of the node's own start.
    pub own: usize,
    /// Its start as an argument of a call or aggregation: at a unary `+` before it.
    pub outer: usize,
    /// Its rank in Prometheus' order of evaluation (post-order, left to right).
    pub order: usize,
}

impl Positions {
    /// The starts of the nodes of `expr`, parsed from `query`.
    pub fn of(query: &str, expr: &Expr) -> Positions {
        let tokens = QueryTokens::new(query);
        let unary = (0..tokens.len())
            .map(|i| matches!(tokens[i], Token::Byte(b'-' | b'+', _)) && (i == 0 || !tokens.ends_operand(i - 1)))
            .collect();
        let mut walk = Walk {
            tokens,
            unary,
            places: HashMap::new(),
        };
        let end = walk.tokens.len();
        walk.node(expr, 0, end);
        Positions { places: walk.places }
    }

    /// Where the node at `address` starts.
    pub fn place(&self, address: usize) -> Option<Place> {
        self.places.get(&address).copied()
    }

    /// The byte offset where the node at `address` starts.
    pub fn start(&self, address: usize) -> Option<usize> {
        self.place(address).map(|p| p.own)
    }
}

/// Lines and columns of byte offsets of a query, as Prometheus' `StartPosInput` words them.
pub struct Lines {
    newlines: Vec<usize>,
}

impl Lines {
    pub fn new(query: &str) -> Lines {
        Lines {
            newlines: query
                .bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i)
                .collect(),
        }
    }

    /// `line:column` of byte `offset`: lines from 1, columns in bytes from 1.
    pub fn line_column(&self, offset: usize) -> String {
        let before = self.newlines.partition_point(|&n| n < offset);
        let column = match before {
            0 => offset + 1,
            n => offset - self.newlines[n - 1],
        };
        format!("{}:{column}", before + 1)
    }
}

/// The address of a node, as [`Positions`] keys it.
pub fn address(expr: &Expr) -> usize {
    expr as *const Expr as usize
}

struct Walk<'q> {
    tokens: QueryTokens<'q>,
    /// Whether each token is a unary sign: nothing before it ends an operand.
    unary: Vec<bool>,
    places: HashMap<usize, Place>,
}

impl Walk<'_> {
    /// Finds `expr` at or after token `from` and before `limit`, records where it and its
    /// children start, and gives the token after it.
    fn node(&mut self, expr: &Expr, from: usize, limit: usize) -> Option<usize> {
        // As deep as the tree: on a new stack segment when this one runs low, as evaluation.
        stacker::maybe_grow(128 * 1024, 4 * 1024 * 1024, || self.node_here(expr, from, limit))
    }

    fn node_here(&mut self, expr: &Expr, from: usize, limit: usize) -> Option<usize> {
        let (start, next) = match expr {
            Expr::VectorSelector(vs) => self.selector(vs, from, limit)?,
            Expr::MatrixSelector(ms) => self.selector(&ms.vs, from, limit)?,
            Expr::Subquery(sq) => {
                let next = self.node(&sq.expr, from, limit)?;
                (self.places[&address(&sq.expr)].own, next)
            }
            Expr::Binary(b) => {
                let after_lhs = self.node(&b.lhs, from, limit)?;
                let start = self.places[&address(&b.lhs)].own;
                let next = self.node(&b.rhs, after_lhs, limit)?;
                (start, next)
            }
            Expr::Paren(p) => {
                let open = self.find(from, limit, |w, i| matches!(w.tokens[i], Token::Byte(b'(', _)))?;
                let close = self.closing(open, limit)?;
                self.node(&p.expr, open + 1, close);
                (self.offset(open), close + 1)
            }
            Expr::Unary(u) => {
                let sign = self.find(from, limit, |w, i| w.unary[i])?;
                let next = self.node(&u.expr, sign + 1, limit)?;
                (self.offset(sign), next)
            }
            Expr::NumberLiteral(_) => {
                let mut j = self.find(from, limit, |w, i| match w.tokens[i] {
                    Token::Word(s, e) => is_number(&w.tokens.query[s..e]),
                    _ => false,
                })?;
                let next = j + 1;
                // Signs no other node took are the number's, as Prometheus folds them; before
                // a power (`-1 ^ 2`, `+1 ^ 2`) they are the power's.
                if !matches!(self.tokens.get(next), Some(Token::Byte(b'^', _))) {
                    while j > from && self.unary[j - 1] {
                        j -= 1;
                    }
                }
                (self.offset(j), next)
            }
            Expr::StringLiteral(_) => {
                let j = self.find(from, limit, |w, i| matches!(w.tokens[i], Token::Literal(_)))?;
                (self.offset(j), j + 1)
            }
            Expr::Call(c) => {
                let name = self.find(from, limit, |w, i| match w.tokens[i] {
                    Token::Word(s, e) => w.tokens.query[s..e] == *c.func.name,
                    _ => false,
                })?;
                let args = self.arguments(c.args.args.iter().map(|a| &**a), name + 1, limit)?;
                (self.offset(name), args)
            }
            Expr::Aggregate(a) => {
                let op = a.op.to_string();
                let name = self.find(from, limit, |w, i| match w.tokens[i] {
                    Token::Word(s, e) => w.tokens.query[s..e].eq_ignore_ascii_case(&op),
                    _ => false,
                })?;
                let children = a.param.iter().map(|p| &**p).chain([&*a.expr]);
                let args = self.arguments(children, name + 1, limit)?;
                (self.offset(name), args)
            }
            Expr::Extension(_) => return None,
        };
        // Children are placed before their parent: the order Prometheus evaluates them in.
        let place = Place {
            own: start,
            outer: start,
            order: self.places.len(),
        };
        self.places.insert(address(expr), place);
        Some(next)
    }

    /// Where a selector starts (its metric name, or `{`) and the token after its matchers.
    fn selector(&self, vs: &VectorSelector, from: usize, limit: usize) -> Option<(usize, usize)> {
        let j = self.find(from, limit, |w, i| match w.tokens[i] {
            Token::Group(b'{', ..) => true,
            Token::Word(s, e) => vs.name.as_deref() == Some(&w.tokens.query[s..e]),
            _ => false,
        })?;
        let braces = matches!(self.tokens.get(j + 1), Some(Token::Group(b'{', ..)));
        let next = if matches!(self.tokens[j], Token::Word(..)) && braces {
            j + 2
        } else {
            j + 1
        };
        Some((self.offset(j), next))
    }

    /// Reads the parenthesised arguments that follow a call's name or an aggregation's
    /// operator (and its `by`/`without` clause) at or after `from`; the token after them.
    fn arguments<'e>(&mut self, args: impl Iterator<Item = &'e Expr>, from: usize, limit: usize) -> Option<usize> {
        let open = self.find(from, limit, |w, i| matches!(w.tokens[i], Token::Byte(b'(', _)))?;
        let close = self.closing(open, limit)?;
        let mut at = open + 1;
        for arg in args {
            let Some(next) = self.node(arg, at, close) else { break };
            // A unary `+` before the argument, which promql-parser drops, is a node of
            // Prometheus' tree that starts the argument there.
            if let Some(place) = self.places.get_mut(&address(arg)) {
                let mut first = self.tokens.partition_point(|t| token_start(*t) < place.own);
                while first > at && self.unary[first - 1] && matches!(self.tokens[first - 1], Token::Byte(b'+', _)) {
                    first -= 1;
                }
                place.outer = token_start(self.tokens[first.min(self.tokens.len() - 1)]).min(place.own);
            }
            at = next;
        }
        Some(close + 1)
    }

    /// The first token from `from` (before `limit`) that `starts` accepts, stepping over
    /// what starts no expression.
    fn find(&self, from: usize, limit: usize, starts: impl Fn(&Self, usize) -> bool) -> Option<usize> {
        let mut i = from;
        while i < limit.min(self.tokens.len()) {
            if starts(self, i) {
                return Some(i);
            }
            i = self.past_modifier(i, limit).unwrap_or(i + 1);
        }
        None
    }

    /// When token `i` opens a modifier (a label list, `offset`, `@`), the token after it.
    fn past_modifier(&self, i: usize, limit: usize) -> Option<usize> {
        let followed_by_paren = matches!(self.tokens.get(i + 1), Some(Token::Byte(b'(', _)));
        match self.tokens[i] {
            Token::Word(s, e) => {
                let word = self.tokens.query[s..e].to_ascii_lowercase();
                match word.as_str() {
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right" | "fill" | "fill_left"
                    | "fill_right"
                        if followed_by_paren =>
                    {
                        Some(self.closing(i + 1, limit)? + 1)
                    }
                    "offset" => Some(self.past_value(i + 1, limit)),
                    _ => None,
                }
            }
            Token::Byte(b'@', _) => Some(self.past_value(i + 1, limit)),
            _ => None,
        }
    }

    /// The token after the value of an `offset` or `@` that starts at token `i`: signs, then
    /// a number or duration, `start()`/`end()`, or a parenthesised duration expression.
    fn past_value(&self, mut i: usize, limit: usize) -> usize {
        while matches!(self.tokens.get(i), Some(Token::Byte(b'-' | b'+', _))) {
            i += 1;
        }
        if matches!(self.tokens.get(i), Some(Token::Word(..))) {
            i += 1;
        }
        if matches!(self.tokens.get(i), Some(Token::Byte(b'(', _))) {
            if let Some(close) = self.closing(i, limit) {
                i = close + 1;
            }
        }
        i
    }

    /// The `)` that closes the `(` at token `open`, before `limit`.
    fn closing(&self, open: usize, limit: usize) -> Option<usize> {
        self.tokens.closing(open).filter(|&close| close < limit)
    }

    /// The byte offset where token `j` starts.
    fn offset(&self, j: usize) -> usize {
        token_start(self.tokens[j])
    }
}

fn token_start(token: Token) -> usize {
    match token {
        Token::Word(s, _) | Token::Group(_, s, _) | Token::Byte(_, s) | Token::Literal(s) => s,
    }
}

/// Whether a word is a number literal: digits, a hexadecimal number, `Inf` or `NaN` (a
/// duration used as a number starts with a digit too).
fn is_number(word: &str) -> bool {
    word.as_bytes()
        .first()
        .is_some_and(|b| b.is_ascii_digit() || *b == b'.')
        || word.eq_ignore_ascii_case("inf")
        || word.eq_ignore_ascii_case("nan")
        || word.bytes().all(is_name_byte) && word.parse::<f64>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_column(query: &str, offset: usize) -> String {
        Lines::new(query).line_column(offset)
    }

    /// Every node of `query`, in tree order (a node before its children), briefly, with the
    /// `line:column` where it starts.
    fn starts(query: &str) -> Vec<(String, String)> {
        let expr = crate::parse::parse(query, 100).unwrap();
        let positions = Positions::of(query, &expr);
        let mut out = Vec::new();
        let mut stack = vec![&expr];
        while let Some(e) = stack.pop() {
            let at = positions
                .start(address(e))
                .map_or("none".to_string(), |s| line_column(query, s));
            out.push((short(e), at));
            let mut children = crate::parse::children(e);
            children.reverse();
            stack.extend(children);
        }
        out
    }

    fn short(e: &Expr) -> String {
        match e {
            Expr::Aggregate(a) => a.op.to_string(),
            Expr::Call(c) => c.func.name.to_string(),
            Expr::Binary(b) => format!("binary {}", b.op),
            Expr::Unary(_) => "unary".into(),
            Expr::Paren(_) => "paren".into(),
            Expr::Subquery(_) => "subquery".into(),
            Expr::NumberLiteral(n) => n.val.to_string(),
            Expr::StringLiteral(s) => format!("{:?}", s.val),
            Expr::VectorSelector(vs) => vs.name.clone().unwrap_or_default(),
            Expr::MatrixSelector(ms) => format!("{}[]", ms.vs.name.clone().unwrap_or_default()),
            Expr::Extension(_) => "extension".into(),
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn a_call_starts_at_its_name_and_a_range_selector_at_its_metric() {
        assert_eq!(
            starts("sum by (foo) (rate(foo[5m] offset 1m))"),
            pairs(&[("sum", "1:1"), ("rate", "1:15"), ("foo[]", "1:20")])
        );
    }

    #[test]
    fn label_lists_offsets_and_at_values_start_nothing() {
        // `foo` in the grouping, `1` after `@`, `b` in `on(b)` are not the nodes.
        assert_eq!(
            starts("sum(foo) by (foo) + on(b) group_left(c) b @ 1 * 1"),
            pairs(&[
                ("binary +", "1:1"),
                ("sum", "1:1"),
                ("foo", "1:5"),
                ("binary *", "1:41"),
                ("b", "1:41"),
                ("1", "1:49"),
            ])
        );
    }

    #[test]
    fn a_sign_belongs_to_its_number_and_a_unary_minus_starts_its_expression() {
        assert_eq!(
            starts("quantile(-1, -x) - -2"),
            pairs(&[
                ("binary -", "1:1"),
                ("quantile", "1:1"),
                ("unary", "1:14"),
                ("x", "1:15"),
                ("-1", "1:10"),
                ("-2", "1:20"),
            ])
        );
    }

    #[test]
    fn lines_count_from_one_and_columns_in_bytes() {
        let query = "sum(\n  rate(\"é\" or x[5m])\n)";
        assert_eq!(line_column(query, 0), "1:1");
        assert_eq!(line_column(query, 5), "2:1");
        assert_eq!(line_column(query, 7), "2:3");
        // `é` is two bytes: the `x` after it is two columns further than its characters.
        assert_eq!(line_column(query, query.find(" or").unwrap()), "2:12");
        assert_eq!(
            starts("sum(\n  rate(x[5m])\n) / {__name__=\"y\"}"),
            pairs(&[
                ("binary /", "1:1"),
                ("sum", "1:1"),
                ("rate", "2:3"),
                ("x[]", "2:8"),
                ("", "3:5")
            ])
        );
    }

    #[test]
    fn subqueries_parentheses_and_strings_start_where_their_text_does() {
        assert_eq!(
            starts("rate((x)[5m:1m] offset -1m) + 1"),
            pairs(&[
                ("binary +", "1:1"),
                ("rate", "1:1"),
                ("subquery", "1:6"),
                ("paren", "1:6"),
                ("x", "1:7"),
                ("1", "1:31"),
            ])
        );
        assert_eq!(
            starts("label_replace(x, 'a', \"$1\", `b`, \"(.*)\")"),
            pairs(&[
                ("label_replace", "1:1"),
                ("x", "1:15"),
                ("\"a\"", "1:18"),
                ("\"$1\"", "1:23"),
                ("\"b\"", "1:29"),
                ("\"(.*)\"", "1:34"),
            ])
        );
    }

    #[test]
    fn deep_queries_are_walked_without_exhausting_the_stack() {
        let depth = 900;
        let query = format!("{}rate(x[5m]){}", "(".repeat(depth), ")".repeat(depth));
        let expr = crate::parse::parse(&query, 1000).unwrap();
        let positions = Positions::of(&query, &expr);
        assert_eq!(positions.start(address(&expr)), Some(0));
        // The call, 900 parentheses in.
        let mut inner = &expr;
        while let Expr::Paren(p) = inner {
            inner = &p.expr;
        }
        assert_eq!(positions.start(address(inner)), Some(depth));
    }

    #[test]
    fn a_dropped_unary_plus_starts_the_argument_but_not_the_node() {
        let query = "sum(+x) + -(+1 ^ 2)";
        let expr = crate::parse::parse(query, 100).unwrap();
        let positions = Positions::of(query, &expr);
        let Expr::Binary(b) = &expr else { panic!("{expr:?}") };
        let Expr::Aggregate(sum) = &*b.lhs else { panic!("{b:?}") };
        let x = positions.place(address(&sum.expr)).unwrap();
        assert_eq!((x.own, x.outer), (5, 4));
        // `+1 ^ 2` is `+(1 ^ 2)`: the sign is the power's, not the number's.
        let Expr::Unary(u) = &*b.rhs else { panic!("{b:?}") };
        let Expr::Paren(p) = &*u.expr else { panic!("{u:?}") };
        let Expr::Binary(power) = &*p.expr else { panic!("{p:?}") };
        assert_eq!(positions.start(address(&power.lhs)), Some(13));
        assert_eq!(positions.start(address(&p.expr)), Some(13));
        // Children come before their parents in the order of evaluation, left before right.
        let order = |e: &Expr| positions.place(address(e)).unwrap().order;
        assert!(order(&sum.expr) < order(&b.lhs));
        assert!(order(&b.lhs) < order(&b.rhs));
        assert!(order(&b.rhs) < order(&expr));
    }

    #[test]
    fn signed_exponents_are_part_of_their_numbers() {
        assert_eq!(
            starts("1e-3 + 2 % x @ 1.5e+3 + 3"),
            pairs(&[
                ("binary +", "1:1"),
                ("binary +", "1:1"),
                ("0.001", "1:1"),
                ("binary %", "1:8"),
                ("2", "1:8"),
                ("x", "1:12"),
                ("3", "1:25"),
            ])
        );
    }
}
