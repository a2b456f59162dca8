//! Parsing with a bounded nesting depth.
//!
//! Everything that walks a syntax tree (the parser's own type checks, the planner, the
//! evaluator, even dropping the tree) recurses once per level, so a query like `1+1+...+1`
//! with thousands of terms would overflow a thread's stack. Prometheus' parser has no limit;
//! ours refuses queries deeper than [`MAX_DEPTH`] before anything recursive runs: one linear
//! pass over the text ([`depth_bound`]) bounds the depth of the tree it would parse into.

use promql_parser::parser::Expr;

use crate::error::QueryError;

/// The deepest expression tree a query may have: levels of operators, parentheses, function
/// calls, aggregations and subqueries, counted as [`depth_bound`] counts them.
pub const MAX_DEPTH: usize = 1000;

/// Parses `query`, refusing it (as bad data) when its tree could be deeper than `max_depth`,
/// every optional feature enabled.
pub fn parse(query: &str, max_depth: usize) -> Result<Expr, QueryError> {
    parse_with(query, max_depth, crate::Features::all())
}

/// As [`parse`], refusing what `features` does not enable, as Prometheus' parser does
/// (before anything else it checks).
pub fn parse_with(query: &str, max_depth: usize, features: crate::Features) -> Result<Expr, QueryError> {
    let depth = depth_bound(query);
    if depth > max_depth {
        return Err(QueryError::BadData(format!(
            "the query is nested too deeply: up to {depth} levels of operators, parentheses, calls \
             and subqueries, more than the {max_depth} allowed"
        )));
    }
    let expr = parse_syntax(query)?;
    check_features(&expr, features)?;
    refuse_unsupported(&expr)?;
    Ok(expr)
}

/// The syntax tree of `query` as Prometheus 3's grammar reads it, without the checks of
/// [`parse_with`]: the parser's, plus what it lacks (the `anchored` and `smoothed` modifiers,
/// the trim operators `</` and `>/`), brought in around it.
pub fn parse_syntax(query: &str) -> Result<Expr, QueryError> {
    let original = query;
    let query = crate::byte_escapes::rewrite(query);
    let query = crate::syntax_markers::rewrite(&query)?;
    let (query, trims) = crate::trim_operators::rewrite(&query);
    register_prometheus_2_functions();
    // The parser panics on a few inputs (a float duration too large for a Duration): a query
    // it cannot handle is bad data, not a reason to drop the connection.
    let mut expr = match std::panic::catch_unwind(|| promql_parser::parser::parse(&query)) {
        Ok(parsed) => parsed.map_err(QueryError::BadData)?,
        Err(_) => {
            return Err(QueryError::BadData(format!(
                "invalid query: {original:?} cannot be parsed"
            )))
        }
    };
    crate::trim_operators::restore(&mut expr, &trims)?;
    Ok(expr)
}

/// Teaches the parser (which follows Prometheus 3) the functions of Prometheus 2 that
/// Prometheus 3 renamed: `holt_winters` (now `double_exponential_smoothing`).
fn register_prometheus_2_functions() {
    use promql_parser::parser::function::{register_extra_functions, Function};
    use promql_parser::parser::value::ValueType;
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        // Refused only if the parser knew it already, which is as good.
        let _ = register_extra_functions(vec![Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        )]);
    });
}

/// The aggregations the engine evaluates: Prometheus 2.42's and Prometheus 3's `limitk` and
/// `limit_ratio`.
const AGGREGATIONS: [&str; 14] = [
    "sum",
    "avg",
    "count",
    "min",
    "max",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "limitk",
    "limit_ratio",
];

/// Refuses what the parser accepts beyond what the engine evaluates: calls of functions and
/// aggregations the engine does not have, and `or` between label matchers (an extension of
/// the parser's own, which no Prometheus accepts).
fn refuse_unsupported(expr: &Expr) -> Result<(), QueryError> {
    let refuse = |what: String| Err(QueryError::BadData(what));
    let selector = |vs: &promql_parser::parser::VectorSelector| {
        let modified = crate::syntax_markers::mode(vs) != crate::syntax_markers::Mode::Plain;
        if modified && vs.name.is_none() && crate::syntax_markers::without_markers(vs).all(|m| m.is_match("")) {
            // The modifier's matcher made the parser accept `{} anchored`.
            refuse("vector selector must contain at least one non-empty matcher".into())
        } else if vs.matchers.or_matchers.is_empty() {
            Ok(())
        } else {
            refuse(format!(
                "unexpected \"or\" in the label matchers of {vs}: separate matchers with \",\""
            ))
        }
    };
    let mut pending = vec![expr];
    while let Some(e) = pending.pop() {
        match e {
            Expr::Aggregate(a) => {
                let op = a.op.to_string();
                if !AGGREGATIONS.contains(&op.as_str()) {
                    return refuse(format!("unknown aggregation {op:?}"));
                }
            }
            Expr::Call(c) if crate::engine::functions::kind(c.func.name).is_none() => {
                return refuse(format!("unknown function with name {:?}", c.func.name));
            }
            // As Prometheus' parser: info's second argument is label matchers, not a selector.
            Expr::Call(c) if c.func.name == "info" && c.args.args.len() > 1 => match c.args.args[1].as_ref() {
                Expr::VectorSelector(vs) if vs.name.is_some() => {
                    return refuse("expected label selectors only, got vector selector instead".into())
                }
                Expr::VectorSelector(vs) => selector(vs)?,
                _ => return refuse("expected label selectors only".into()),
            },
            Expr::VectorSelector(vs) => selector(vs)?,
            Expr::MatrixSelector(ms) => selector(&ms.vs)?,
            _ => {}
        }
        pending.extend(children(e));
    }
    Ok(())
}

/// Whether `expr` calls the function `name` anywhere.
pub fn calls(expr: &Expr, name: &str) -> bool {
    let mut pending = vec![expr];
    while let Some(e) = pending.pop() {
        if matches!(e, Expr::Call(c) if c.func.name == name) {
            return true;
        }
        pending.extend(children(e));
    }
    false
}

/// Refuses what `features` does not enable, with Prometheus' messages, reporting the first
/// refusal as its parser would: innermost first, left to right.
fn check_features(expr: &Expr, features: crate::Features) -> Result<(), QueryError> {
    let refused = |e: &Expr| -> Option<String> {
        match e {
            // The parser's flag is Prometheus 3.16's `Experimental`, also for the functions
            // this engine does not evaluate (`integral`).
            Expr::Call(c) if !features.experimental_functions && c.func.experimental => {
                Some(format!("function {:?} is not enabled", c.func.name))
            }
            Expr::Aggregate(a) if !features.experimental_functions => {
                let op = a.op.to_string();
                (op == "limitk" || op == "limit_ratio").then(|| {
                    format!("{op}() is experimental and must be enabled with --enable-feature=promql-experimental-functions")
                })
            }
            Expr::Binary(b)
                if !features.binop_fill_modifiers
                    && b.modifier
                        .as_ref()
                        .is_some_and(|m| m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some()) =>
            {
                Some("binop fill modifiers are experimental and not enabled".into())
            }
            _ => None,
        }
    };
    // Post-order without recursion: children (left first) before their parent.
    let mut pending = vec![(expr, false)];
    while let Some((e, children_done)) = pending.pop() {
        if children_done {
            if let Some(message) = refused(e) {
                return Err(QueryError::BadData(message));
            }
            continue;
        }
        pending.push((e, true));
        pending.extend(children(e).into_iter().rev().map(|c| (c, false)));
    }
    Ok(())
}

/// The expressions directly inside `e`.
pub(crate) fn children(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::Aggregate(a) => [Some(&*a.expr), a.param.as_deref()].into_iter().flatten().collect(),
        Expr::Unary(u) => vec![&*u.expr],
        Expr::Binary(b) => vec![&*b.lhs, &*b.rhs],
        Expr::Paren(p) => vec![&*p.expr],
        Expr::Subquery(s) => vec![&*s.expr],
        Expr::Call(c) => c.args.args.iter().map(|a| a.as_ref()).collect(),
        _ => Vec::new(),
    }
}

/// All matchers of one selector, its metric name as a `__name__` matcher.
pub fn selector_matchers(vs: &promql_parser::parser::VectorSelector) -> Vec<promql_parser::label::Matcher> {
    crate::engine::matchers(vs)
}

/// The matchers of every selector of `expr` (the metric name as a `__name__` matcher), in
/// the order they appear: what `/api/v1/query_exemplars` and `match[]` select.
pub fn selectors(expr: &Expr) -> Vec<Vec<promql_parser::label::Matcher>> {
    let mut out = Vec::new();
    let mut pending = vec![expr];
    while let Some(e) = pending.pop() {
        match e {
            Expr::Aggregate(a) => {
                pending.extend(a.param.as_deref());
                pending.push(&a.expr);
            }
            Expr::Unary(u) => pending.push(&u.expr),
            Expr::Binary(b) => pending.extend([&*b.rhs, &*b.lhs]),
            Expr::Paren(p) => pending.push(&p.expr),
            Expr::Subquery(s) => pending.push(&s.expr),
            Expr::Call(c) => pending.extend(c.args.args.iter().rev().map(|a| a.as_ref())),
            Expr::VectorSelector(vs) => out.push(selector_matchers(vs)),
            Expr::MatrixSelector(ms) => out.push(selector_matchers(&ms.vs)),
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }
    out
}

/// A token of query text outside label matchers: a run of name bytes (names, keywords,
/// numbers, durations), a group in `{}` or `[]`, or one other byte.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Token {
    Word(usize, usize),
    Group(u8, usize, usize),
    /// A byte and where it is.
    Byte(u8, usize),
    /// A string literal, where it starts.
    Literal(usize),
}

/// The tokens of a query's text, and which `(` each `)` closes.
pub(crate) struct QueryTokens<'q> {
    pub query: &'q str,
    tokens: Vec<Token>,
    open_of: Vec<Option<usize>>,
    close_of: Vec<Option<usize>>,
}

impl std::ops::Deref for QueryTokens<'_> {
    type Target = [Token];

    fn deref(&self) -> &[Token] {
        &self.tokens
    }
}

impl<'q> QueryTokens<'q> {
    pub fn new(query: &'q str) -> QueryTokens<'q> {
        let tokens = tokens(query);
        let mut opens = Vec::new();
        let mut open_of = vec![None; tokens.len()];
        let mut close_of = vec![None; tokens.len()];
        for (i, token) in tokens.iter().enumerate() {
            match token {
                Token::Byte(b'(', _) => opens.push(i),
                Token::Byte(b')', _) => {
                    open_of[i] = opens.pop();
                    if let Some(open) = open_of[i] {
                        close_of[open] = Some(i);
                    }
                }
                _ => {}
            }
        }
        QueryTokens {
            query,
            tokens,
            open_of,
            close_of,
        }
    }

    /// The `)` that closes the `(` at token `open`.
    pub fn closing(&self, open: usize) -> Option<usize> {
        self.close_of.get(open).copied().flatten()
    }

    /// Whether the text up to and including token `i` ends an operand, so that a keyword
    /// after it is a modifier and not a name, and a sign after it is a binary operator.
    pub fn ends_operand(&self, i: usize) -> bool {
        match self.tokens[i] {
            Token::Group(..) | Token::Literal(_) => true,
            // A call, a parenthesised expression or `@ end()` ends an operand; the label list
            // of `on`, `ignoring`, `group_left`, `group_right` and the value of `fill` do not:
            // a name follows them.
            Token::Byte(b')', _) => match self.open_of[i] {
                Some(j) => !matches!(
                    j.checked_sub(1).map(|w| self.tokens[w]),
                    Some(Token::Word(s, e)) if matches!(
                        self.query[s..e].to_ascii_lowercase().as_str(),
                        "on" | "ignoring" | "group_left" | "group_right" | "fill" | "fill_left" | "fill_right"
                    )
                ),
                None => true,
            },
            Token::Byte(_, _) => false,
            Token::Word(s, e) => !is_operand_keyword(&self.query[s..e]),
        }
    }
}

fn tokens(query: &str) -> Vec<Token> {
    let bytes = query.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if let Some(end) = literal_end(bytes, i) {
            // A comment is whitespace; a string a value.
            if bytes[i] != b'#' {
                out.push(Token::Literal(i));
            }
            i = end;
            continue;
        }
        let b = bytes[i];
        if is_name_byte(b) || b == b'.' {
            let word_end = |from: usize| {
                bytes[from..]
                    .iter()
                    .position(|&b| !(is_name_byte(b) || b == b'.'))
                    .map_or(bytes.len(), |n| from + n)
            };
            let mut end = word_end(i);
            // A number's signed exponent (`1e-3`, `2.5E+9`) is part of it.
            let mantissa = &bytes[i..end - 1];
            if matches!(bytes[end - 1], b'e' | b'E')
                && mantissa.iter().any(u8::is_ascii_digit)
                && mantissa.iter().all(|b| b.is_ascii_digit() || *b == b'.')
                && matches!(bytes.get(end), Some(b'+' | b'-'))
                && bytes.get(end + 1).is_some_and(u8::is_ascii_digit)
            {
                end = word_end(end + 1);
            }
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
                out.push(Token::Byte(b, i));
            }
            i += 1;
        }
    }
    out
}

/// Where the string literal or comment that starts at `i` of query text ends: just past its
/// closing quote (over escapes; raw strings have none), or at the end of its line; `None`
/// when neither starts there. What scans query text must not read into either.
pub(crate) fn literal_end(bytes: &[u8], i: usize) -> Option<usize> {
    match bytes.get(i)? {
        &quote @ (b'"' | b'\'' | b'`') => {
            let mut j = i + 1;
            while j < bytes.len() {
                match bytes[j] {
                    b'\\' if quote != b'`' => j += 2,
                    b if b == quote => return Some(j + 1),
                    _ => j += 1,
                }
            }
            Some(bytes.len())
        }
        b'#' => Some(
            bytes[i..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |n| i + n),
        ),
        _ => None,
    }
}

/// Whether `word` (any case) is a keyword after which an operand follows (a binary operator
/// or a modifier), so that a name after it is a name and not a modifier keyword.
pub(crate) fn is_operand_keyword(word: &str) -> bool {
    matches!(
        word.to_ascii_lowercase().as_str(),
        "and"
            | "or"
            | "unless"
            | "atan2"
            | "bool"
            | "by"
            | "without"
            | "on"
            | "ignoring"
            | "group_left"
            | "group_right"
            | "offset"
    )
}

/// Whether `b` belongs to a name, a keyword or a number of query text.
pub(crate) fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// An upper bound of the depth of the syntax tree `query` parses into, without parsing it.
///
/// Within one pair of parentheses, every operator (binary, unary, or the `[` of a range or
/// subquery) can add at most one level, whatever precedence does with them: the bound of a
/// group is one level for the group itself, plus its operators, plus the deepest group inside
/// it. Strings, comments, label matchers (`{...}`) and durations (`[...]`) add nothing. It is
/// exact for chains like `a or b or c` and overestimates mixed precedence (`a*b + c*d`).
pub fn depth_bound(query: &str) -> usize {
    #[derive(Clone, Copy, PartialEq)]
    enum Group {
        Paren,
        Brace,
        Bracket,
    }
    struct Frame {
        group: Group,
        operators: usize,
        deepest_child: usize,
    }
    impl Frame {
        fn new(group: Group) -> Self {
            Frame {
                group,
                operators: 0,
                deepest_child: 0,
            }
        }
        fn depth(&self) -> usize {
            1usize.saturating_add(self.operators).saturating_add(self.deepest_child)
        }
    }
    let bytes = query.as_bytes();
    let mut stack = vec![Frame::new(Group::Paren)];
    let close = |stack: &mut Vec<Frame>| {
        if stack.len() > 1 {
            let done = stack.pop().expect("more than one frame");
            let parent = stack.last_mut().expect("the outermost frame");
            parent.deepest_child = parent.deepest_child.max(done.depth());
        }
    };
    let mut i = 0;
    while i < bytes.len() {
        if let Some(end) = literal_end(bytes, i) {
            i = end;
            continue;
        }
        let c = bytes[i];
        let top = stack.last_mut().expect("the outermost frame is never popped");
        let in_expression = top.group == Group::Paren;
        match c {
            b'(' => stack.push(Frame::new(Group::Paren)),
            b'{' => stack.push(Frame::new(Group::Brace)),
            b'[' => {
                if in_expression {
                    top.operators = top.operators.saturating_add(1);
                }
                stack.push(Frame::new(Group::Bracket));
            }
            b')' | b'}' | b']' => close(&mut stack),
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' if in_expression => {
                top.operators = top.operators.saturating_add(1);
            }
            b'=' | b'!' | b'<' | b'>' if in_expression => {
                // One comparison, however many characters it is spelt with.
                top.operators = top.operators.saturating_add(1);
                while i + 1 < bytes.len() && matches!(bytes[i + 1], b'=' | b'!' | b'<' | b'>') {
                    i += 1;
                }
            }
            c if is_name_byte(c) => {
                let start = i;
                while i + 1 < bytes.len() && is_name_byte(bytes[i + 1]) {
                    i += 1;
                }
                let word = &query[start..=i];
                if in_expression
                    && ["and", "or", "unless", "atan2"]
                        .iter()
                        .any(|k| word.eq_ignore_ascii_case(k))
                {
                    top.operators = top.operators.saturating_add(1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    while stack.len() > 1 {
        close(&mut stack);
    }
    stack[0].depth()
}

/// The real depth of a parsed tree (what [`depth_bound`] bounds from the text), without
/// recursion.
pub fn tree_depth(expr: &Expr) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(expr, 1)];
    while let Some((e, d)) = pending.pop() {
        deepest = deepest.max(d);
        match e {
            Expr::Aggregate(a) => {
                pending.push((&a.expr, d + 1));
                if let Some(p) = &a.param {
                    pending.push((p, d + 1));
                }
            }
            Expr::Unary(u) => pending.push((&u.expr, d + 1)),
            Expr::Binary(b) => {
                pending.push((&b.lhs, d + 1));
                pending.push((&b.rhs, d + 1));
            }
            Expr::Paren(p) => pending.push((&p.expr, d + 1)),
            Expr::Subquery(s) => pending.push((&s.expr, d + 1)),
            Expr::Call(c) => pending.extend(c.args.args.iter().map(|a| (a.as_ref(), d + 1))),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_never_below_the_real_depth() {
        let queries = [
            "up",
            "1",
            "-up",
            "- - -1",
            "up + on(job) group_left(instance) up",
            "sum by (job) (rate(http_requests_total{code=~\"5..\", path!=\"/(x)\"}[5m])) / ignoring(code) sum(rate(x[5m]))",
            "1 + 2 * 3 ^ 4 ^ 5 - 6 / 7 % 8",
            "a > bool b == bool c <= bool d",
            "a and b or c unless d AND e Or f",
            "a atan2 b + c ATAN2 d",
            "max_over_time(rate(x[5m:1m])[1h:5m] offset -1m)",
            "((((((1))))))",
            "abs(abs(abs(abs(up))))",
            "topk(3, sum without (a) (x @ start()))",
            "histogram_quantile(0.9, sum by (le) (rate(b[5m]))) # a comment with ((((\n+ 1",
            "label_replace(up, \"a\", \"$1)\", \"b\", \"(.*)\")",
            "1e-5 + 0x1F - Inf",
            "sum(x) by (a, b) + on() vector(1)",
        ];
        for q in queries {
            let expr = promql_parser::parser::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
            assert!(
                depth_bound(q) >= tree_depth(&expr),
                "{q}: bound {} < depth {}",
                depth_bound(q),
                tree_depth(&expr)
            );
            assert!(
                depth_bound(q) <= 4 * tree_depth(&expr) + 4,
                "{q}: bound {} far above",
                depth_bound(q)
            );
        }
    }

    #[test]
    fn chains_count_one_level_per_operator() {
        let sum = vec!["1"; 3000].join("+");
        assert_eq!(depth_bound(&sum), 3000);
        let or: Vec<String> = (0..5000).map(|i| format!("vector({i})")).collect();
        assert!(depth_bound(&or.join(" or ")) >= 5000);
        assert_eq!(depth_bound(&"(".repeat(100_000)), 100_001);
        // Operators inside strings, label matchers and durations are not operators.
        assert_eq!(depth_bound(&format!("x{{a=~\"{}\"}}[5m:1m]", "-(".repeat(10_000))), 3);
    }

    #[test]
    fn deep_queries_are_refused_before_parsing() {
        let sum = vec!["1"; 3000].join("+");
        match parse(&sum, MAX_DEPTH) {
            Err(QueryError::BadData(m)) => assert!(m.contains("nested too deeply"), "{m}"),
            other => panic!("{other:?}"),
        }
        let shallow = vec!["1"; 500].join("+");
        assert!(parse(&shallow, MAX_DEPTH).is_ok());
    }

    #[test]
    fn experimental_features_are_refused_unless_enabled_as_prometheus_refuses_them() {
        let features = crate::Features::default();
        for (q, message) in [
            ("info(up)", r#"function "info" is not enabled"#),
            (
                "sum(sort_by_label(up, \"job\"))",
                r#"function "sort_by_label" is not enabled"#,
            ),
            ("1 + step()", r#"function "step" is not enabled"#),
            (
                "limitk(2, up)",
                "limitk() is experimental and must be enabled with --enable-feature=promql-experimental-functions",
            ),
            (
                "up + on(job) fill(0) up",
                "binop fill modifiers are experimental and not enabled",
            ),
        ] {
            match parse_with(q, MAX_DEPTH, features) {
                Err(QueryError::BadData(m)) => assert_eq!(m, message, "{q}"),
                other => panic!("{q}: {other:?}"),
            }
            assert!(parse_with(q, MAX_DEPTH, crate::Features::all()).is_ok(), "{q}");
        }
        // The first refusal as Prometheus' parser reports it: innermost, then leftmost; and
        // before the functions this engine does not evaluate are refused as unknown.
        for (q, first) in [
            ("limitk(2, info(up))", "info"),
            ("info(up) + sort_by_label(x, \"a\")", "info"),
            ("integral(x[5m])", "integral"),
        ] {
            match parse_with(q, MAX_DEPTH, features) {
                Err(QueryError::BadData(m)) => assert_eq!(m, format!("function {first:?} is not enabled"), "{q}"),
                other => panic!("{q}: {other:?}"),
            }
        }
        // Stable functions and `@ end()` need nothing.
        assert!(parse_with("rate(x[5m] @ end()) + histogram_quantile(0.9, y)", MAX_DEPTH, features).is_ok());
        assert_eq!(
            crate::Features::from_names(["promql-experimental-functions, promql-duration-expr", ""]),
            Ok((
                crate::Features {
                    experimental_functions: true,
                    binop_fill_modifiers: false,
                    delayed_name_removal: false,
                    use_start_timestamps: false,
                },
                vec!["promql-duration-expr"]
            ))
        );
        assert!(crate::Features::from_names(["promql-unknown"]).is_err());
    }

    #[test]
    fn info_takes_label_matchers_only_as_its_second_argument() {
        for q in ["info(up, build_info)", "info(up, sum(x))"] {
            match parse(q, MAX_DEPTH) {
                Err(QueryError::BadData(m)) => assert!(m.starts_with("expected label selectors only"), "{q}: {m}"),
                other => panic!("{q}: {other:?}"),
            }
        }
        assert!(parse(r#"info(up, {__name__="build_info", version=~"2.+"})"#, MAX_DEPTH).is_ok());
    }

    #[test]
    fn functions_the_engine_does_not_evaluate_are_unknown() {
        // Found by promql/tests/proptest_promql.rs: the parser accepts names the engine did
        // not evaluate, and the engine answered `histogram_avg(up)` with an empty vector and
        // `sort_by_label(up, "job")` with "expected scalar, got string". Those are evaluated
        // now; what is still missing must be refused by name.
        for q in ["integral(up[5m])", "sum(rate(x[5m])) / (1 + abs(integral(up[5m])))"] {
            match parse(q, MAX_DEPTH) {
                Err(QueryError::BadData(m)) => assert!(m.starts_with("unknown function with name"), "{q}: {m}"),
                other => panic!("{q}: {other:?}"),
            }
        }
        for q in [
            "histogram_count(up)",
            "histogram_fraction(0, 1, up)",
            "holt_winters(x[5m], 0.5, 0.5)",
            "histogram_avg(up)",
            "histogram_stddev(up)",
            "histogram_stdvar(up)",
            "sort_by_label(up, \"job\")",
            "sort_by_label_desc(up, \"job\")",
            "double_exponential_smoothing(up[5m], 0.5, 0.5)",
            "first_over_time(up[5m])",
            "mad_over_time(up[5m])",
            "ts_of_max_over_time(up[5m])",
        ] {
            assert!(parse(q, MAX_DEPTH).is_ok(), "{q}");
        }
    }

    #[test]
    fn what_the_parser_accepts_beyond_prometheus_is_refused() {
        for (q, says) in [
            ("up{job=\"a\" or job=\"b\"}", "unexpected \"or\""),
            ("rate(up{job=\"a\" or job=\"b\"}[5m])", "unexpected \"or\""),
        ] {
            match parse(q, MAX_DEPTH) {
                Err(QueryError::BadData(m)) => assert!(m.contains(says), "{q}: {m}"),
                other => panic!("{q}: {other:?}"),
            }
        }
        for q in [
            "topk(2, up) + on(job) group_left bottomk(1, up)",
            "count_values(\"v\", up)",
            "limitk(2, up)",
            "limit_ratio(0.5, up)",
            "up + fill(0) up",
            "up / on(job) fill_left(1) up",
            "{\"http.server.duration\", \"service.name\"=\"x\"}",
            "sum by (\"service.name\") (rate({\"a.b\"}[5m]))",
        ] {
            assert!(parse(q, MAX_DEPTH).is_ok(), "{q}");
        }
    }

    #[test]
    fn inputs_the_parser_panics_on_are_bad_data() {
        for q in ["x[1e300]", "x[1e300:1m]", "x offset 1e300", "rate(x[-1e300])"] {
            assert!(matches!(parse(q, MAX_DEPTH), Err(QueryError::BadData(_))), "{q}");
        }
    }
}
