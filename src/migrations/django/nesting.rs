//! Bounds a migration file's nesting before it is parsed, and takes parsed trees
//! apart without recursion.
//!
//! ruff's parser grows its own stack on the heap, so parsing deep input is safe;
//! dropping the tree it returns is not (Rust drops boxed trees recursively), nor is
//! our evaluator. [`depth_bound`] measures the file on ruff's own tokens (the ones
//! the parser reads), with an explicit stack; [`Tree`] drops a tree level by level
//! through an explicit stack too, for the files whose tokens nest shallowly but
//! whose tree is deep anyway (the parser's error recovery re-reads some tokens).

use std::cell::RefCell;

use ruff_python_ast::token::TokenKind;
use ruff_python_ast::visitor::transformer::{
    Transformer, walk_expr, walk_interpolated_string_element, walk_pattern, walk_stmt,
};
use ruff_python_ast::{
    AtomicNodeIndex, Expr, ExprNoneLiteral, InterpolatedStringElement,
    InterpolatedStringLiteralElement, ModModule, Pattern, PatternMatchStar, Stmt, StmtPass,
};
use ruff_python_parser::Mode;
use ruff_text_size::TextRange;

use super::super::depth::MAX_DEPTH;

/// A file that nests deeper than [`MAX_DEPTH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooDeep {
    /// The bound for the whole file.
    pub depth: usize,
    /// Byte offset where the nesting first goes deeper than [`MAX_DEPTH`].
    pub offset: usize,
}

/// Checks `source` against [`MAX_DEPTH`] without recursing.
pub(crate) fn check(source: &str) -> Result<(), TooDeep> {
    let depth = depth_bound(source, None);
    if depth <= MAX_DEPTH {
        return Ok(());
    }
    Err(TooDeep {
        depth,
        offset: first_crossing(source),
    })
}

/// One bracket (or f-string) of the token pass.
#[derive(Debug, Default)]
struct Frame {
    /// Depth of this frame's own node.
    base: usize,
    /// Operators, keywords and closed groups since the last separator: each may
    /// wrap what comes before or after it in one more node (`a.b.c`, `- - x`,
    /// `f()()`, `x if c else y if d else z`).
    run: usize,
    /// `lambda`s whose `:` is still ahead; their parameters' commas separate
    /// nothing, and their `:` nests the body one deeper.
    lambdas: usize,
    /// Opened by an f-string or t-string: `{` in it opens an interpolation.
    interpolated: bool,
}

/// An upper bound on the depth of the syntax tree of `source` (and of the
/// parser's recursion on it), from ruff's lexer; stops early once above `stop_above`.
///
/// Each open bracket counts one more than where it opened; between separators
/// (`,`, `=`, and `:` inside brackets, other than a lambda's), every operator, keyword
/// and closed bracket counts one, since each can nest what follows or precedes
/// it one deeper; a logical line starts at its block's indentation level.
pub(crate) fn depth_bound(source: &str, stop_above: Option<usize>) -> usize {
    let mut lexer = ruff_python_parser::lexer::lex(source, Mode::Module);
    let mut frames = vec![Frame::default()];
    let mut indent = 0usize;
    let mut deepest = 0usize;
    loop {
        let kind = lexer.next_token();
        let top_level = frames.len() == 1;
        let Some(top) = frames.last_mut() else {
            break;
        };
        match kind {
            TokenKind::EndOfFile => break,
            TokenKind::Indent => indent += 1,
            TokenKind::Dedent => indent = indent.saturating_sub(1),
            TokenKind::Newline => {
                if top_level {
                    *top = Frame::default();
                }
            }
            TokenKind::NonLogicalNewline | TokenKind::Comment => {}
            TokenKind::Lpar | TokenKind::Lsqb | TokenKind::Lbrace => {
                // An interpolation is an element of the f-string, holding an expression.
                let nodes = if top.interpolated { 2 } else { 1 };
                let base = current(top, top_level, indent) + nodes;
                frames.push(Frame {
                    base,
                    ..Frame::default()
                });
            }
            TokenKind::FStringStart | TokenKind::TStringStart => {
                let base = current(top, top_level, indent) + 1;
                frames.push(Frame {
                    base,
                    interpolated: true,
                    ..Frame::default()
                });
            }
            TokenKind::Rpar | TokenKind::Rsqb | TokenKind::Rbrace => {
                if !top_level {
                    frames.pop();
                }
                // The group may be called, subscripted or operated on next; an
                // f-string's interpolations are side by side.
                if let Some(outer) = frames.last_mut().filter(|f| !f.interpolated) {
                    outer.run += 1;
                }
            }
            // Implicitly concatenated parts are side by side too; a call or
            // subscript that follows opens a bracket, which counts.
            TokenKind::FStringEnd | TokenKind::TStringEnd => {
                if !top_level {
                    frames.pop();
                }
            }
            // Elements, arguments, targets of `a = b = c`: side by side.
            TokenKind::Comma | TokenKind::Equal => {
                if top.lambdas == 0 {
                    top.run = 0;
                }
            }
            TokenKind::Colon => {
                if top.lambdas > 0 {
                    top.lambdas -= 1;
                    top.run += 1;
                } else if top_level {
                    // A block's header; the body on the same line is inside it.
                    top.run += 1;
                } else {
                    // A dict's key and value, a slice's bounds, a format spec.
                    top.run = 0;
                }
            }
            TokenKind::Lambda => {
                top.lambdas += 1;
                top.run += 1;
            }
            // Leaves: they nest nothing.
            TokenKind::Name
            | TokenKind::Int
            | TokenKind::Float
            | TokenKind::Complex
            | TokenKind::String
            | TokenKind::FStringMiddle
            | TokenKind::TStringMiddle
            | TokenKind::Ellipsis
            | TokenKind::True
            | TokenKind::False
            | TokenKind::None
            | TokenKind::Pass
            | TokenKind::Break
            | TokenKind::Continue
            | TokenKind::Match
            | TokenKind::Case
            | TokenKind::Type
            | TokenKind::Lazy => {}
            _ => top.run += 1,
        }
        let top_level = frames.len() == 1;
        if let Some(top) = frames.last() {
            deepest = deepest.max(current(top, top_level, indent));
        }
        if stop_above.is_some_and(|limit| deepest > limit) {
            break;
        }
    }
    deepest
}

fn current(frame: &Frame, top_level: bool, indent: usize) -> usize {
    let base = if top_level { indent } else { frame.base };
    base + frame.run
}

/// Byte offset of the end of the shortest prefix of `source` that already nests
/// deeper than [`MAX_DEPTH`] (the lexer reports no positions, so this bisects).
fn first_crossing(source: &str) -> usize {
    let (mut shallow, mut deep) = (0, source.len());
    while deep - shallow > 1 {
        let mut mid = shallow + (deep - shallow) / 2;
        while !source.is_char_boundary(mid) {
            mid += 1;
        }
        if mid >= deep {
            break;
        }
        if depth_bound(&source[..mid], Some(MAX_DEPTH)) > MAX_DEPTH {
            deep = mid;
        } else {
            shallow = mid;
        }
    }
    deep.saturating_sub(1)
}

/// A parsed module whose tree is taken apart without recursion when dropped.
pub(crate) struct Tree(pub ModModule);

impl Drop for Tree {
    fn drop(&mut self) {
        dismantle(std::mem::take(&mut self.0.body));
    }
}

/// Nodes detached from their parents, waiting to be taken apart. Every cycle of
/// the tree's types passes through one of these four.
#[derive(Default)]
struct Detached {
    stmts: RefCell<Vec<Stmt>>,
    exprs: RefCell<Vec<Expr>>,
    patterns: RefCell<Vec<Pattern>>,
    elements: RefCell<Vec<InterpolatedStringElement>>,
}

/// Drops `body` one level at a time: each node's children are swapped for leaves
/// and queued, so no drop recurses more than one level.
fn dismantle(body: impl IntoIterator<Item = Stmt>) {
    let detached = Detached::default();
    detached.stmts.borrow_mut().extend(body);
    loop {
        let stmt = detached.stmts.borrow_mut().pop();
        if let Some(mut stmt) = stmt {
            walk_stmt(&detached, &mut stmt);
            continue;
        }
        let expr = detached.exprs.borrow_mut().pop();
        if let Some(mut expr) = expr {
            walk_expr(&detached, &mut expr);
            continue;
        }
        let pattern = detached.patterns.borrow_mut().pop();
        if let Some(mut pattern) = pattern {
            walk_pattern(&detached, &mut pattern);
            continue;
        }
        let element = detached.elements.borrow_mut().pop();
        if let Some(mut element) = element {
            walk_interpolated_string_element(&detached, &mut element);
            continue;
        }
        break;
    }
}

impl Transformer for Detached {
    fn visit_stmt(&self, stmt: &mut Stmt) {
        let leaf = Stmt::Pass(StmtPass {
            node_index: AtomicNodeIndex::NONE,
            range: TextRange::default(),
        });
        self.stmts.borrow_mut().push(std::mem::replace(stmt, leaf));
    }

    fn visit_expr(&self, expr: &mut Expr) {
        let leaf = Expr::NoneLiteral(ExprNoneLiteral::default());
        self.exprs.borrow_mut().push(std::mem::replace(expr, leaf));
    }

    fn visit_pattern(&self, pattern: &mut Pattern) {
        let leaf = Pattern::MatchStar(PatternMatchStar {
            node_index: AtomicNodeIndex::NONE,
            range: TextRange::default(),
            name: None,
        });
        self.patterns
            .borrow_mut()
            .push(std::mem::replace(pattern, leaf));
    }

    fn visit_interpolated_string_element(&self, element: &mut InterpolatedStringElement) {
        let leaf = InterpolatedStringElement::Literal(InterpolatedStringLiteralElement {
            range: TextRange::default(),
            node_index: AtomicNodeIndex::NONE,
            value: Box::default(),
        });
        self.elements
            .borrow_mut()
            .push(std::mem::replace(element, leaf));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every way Python nests, about `n` levels deep, as a module-level assignment.
    pub(crate) fn shapes(n: usize) -> Vec<(&'static str, String)> {
        // ruff takes quadratic time over nested f-strings: deep enough is enough.
        let f = n.min(1_000);
        let indented: String = (0..n.min(400))
            .map(|i| format!("{}if x:\n", " ".repeat(i)))
            .collect();
        vec![
            ("unary minus", format!("X = {}1\n", "-".repeat(n))),
            ("unary mix", format!("X = {}1\n", "-+~".repeat(n / 3 + 1))),
            ("not", format!("X = {}x\n", "not ".repeat(n))),
            ("await", format!("X = {}x\n", "await ".repeat(n))),
            ("lists", format!("X = {}{}\n", "[".repeat(n), "]".repeat(n))),
            (
                "parentheses",
                format!("X = {}1{}\n", "(".repeat(n), ")".repeat(n)),
            ),
            ("sets", format!("X = {}1{}\n", "{".repeat(n), "}".repeat(n))),
            (
                "dicts",
                format!("X = {}1{}\n", "{1: ".repeat(n), "}".repeat(n)),
            ),
            (
                "calls in calls",
                format!("X = {}1{}\n", "f(".repeat(n), ")".repeat(n)),
            ),
            ("power", format!("X = 1{}\n", "**1".repeat(n))),
            ("sum", format!("X = 1{}\n", "+1".repeat(n))),
            (
                "and or",
                format!("X = a{}\n", " and b or c".repeat(n / 2 + 1)),
            ),
            (
                "comparison in brackets",
                format!("X = {}1{}\n", "(1 < ".repeat(n), ")".repeat(n)),
            ),
            ("attributes", format!("X = a{}\n", ".b".repeat(n))),
            ("calls", format!("X = f{}\n", "()".repeat(n))),
            ("subscripts", format!("X = x{}\n", "[0]".repeat(n))),
            ("slices", format!("X = x{}\n", "[1:2]".repeat(n))),
            ("lambdas", format!("X = {}1\n", "lambda: ".repeat(n))),
            (
                "lambdas with parameters",
                format!("X = {}1\n", "lambda a, b=1: ".repeat(n)),
            ),
            (
                "conditionals",
                format!("X = {}1\n", "a if b else ".repeat(n)),
            ),
            ("starred", format!("X = [{}x]\n", "* ".repeat(n))),
            (
                "walrus",
                format!("X = {}1{}\n", "(y := ".repeat(n), ")".repeat(n)),
            ),
            (
                "comprehensions",
                format!("X = {}x{}\n", "[".repeat(n), " for x in y]".repeat(n)),
            ),
            (
                "generators",
                format!("X = {}x{}\n", "(".repeat(n), " for x in y)".repeat(n)),
            ),
            (
                "yield",
                format!("def f():\n    X = {}x\n", "yield ".repeat(n)),
            ),
            (
                "indented blocks",
                format!("{indented}{}pass\n", " ".repeat(n.min(400))),
            ),
            (
                "f-strings",
                format!("X = {}1{}\n", "f'{".repeat(f), "}'".repeat(f)),
            ),
            (
                "f-string format specs",
                format!("X = f'{}{}'\n", "{x:".repeat(f), "}".repeat(f)),
            ),
            (
                "match patterns",
                format!(
                    "match x:\n    case {}1{}:\n        pass\n",
                    "[".repeat(n),
                    "]".repeat(n)
                ),
            ),
            (
                "decorated class",
                format!(
                    "@d\nclass C({}object{}):\n    pass\n",
                    "f(".repeat(n),
                    ")".repeat(n)
                ),
            ),
        ]
    }

    pub(crate) fn deepest_allowed(shape: &str) -> String {
        // The largest n of this shape the check lets through.
        let mut best = None;
        for n in (1..=MAX_DEPTH).rev() {
            let Some((_, src)) = shapes(n).into_iter().find(|(name, _)| *name == shape) else {
                panic!("no shape {shape}");
            };
            if check(&src).is_ok() {
                best = Some(src);
                break;
            }
        }
        best.unwrap_or_else(|| panic!("{shape}: not even 1 level passes"))
    }

    #[test]
    fn every_shape_of_deep_nesting_is_measured_deeper_than_the_limit() {
        for n in [MAX_DEPTH + 1, 4_000] {
            for (name, src) in shapes(n) {
                let deep = check(&src).err();
                let Some(deep) = deep else {
                    panic!("{name} at {n}: passed the check")
                };
                assert!(deep.depth > MAX_DEPTH, "{name} at {n}: {deep:?}");
            }
        }
    }

    #[test]
    fn ordinary_nesting_passes() {
        for (name, src) in shapes(10) {
            assert!(check(&src).is_ok(), "{name}: {:?}", check(&src));
        }
        for (name, src) in shapes(1) {
            let depth = depth_bound(&src, None);
            assert!(depth <= 12, "{name}: {depth}");
        }
    }

    #[test]
    fn migrations_django_writes_measure_far_below_the_limit() {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let mut measured = 0;
        for entry in walkdir::WalkDir::new(fixtures)
            .into_iter()
            .filter_map(Result::ok)
        {
            let path = entry.path();
            if !path.to_string_lossy().contains("/migrations/")
                || path.extension().is_none_or(|e| e != "py")
            {
                continue;
            }
            let source = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
            let depth = depth_bound(&source, None);
            assert!(depth <= MAX_DEPTH / 5, "{}: {depth}", path.display());
            measured += 1;
        }
        assert!(measured > 10, "only {measured} fixture migrations found");
    }

    #[test]
    fn the_offset_named_is_where_the_file_first_nests_too_deep() {
        let src = format!(
            "# first\nA = [[1]]\n\nX = [\n{}1{}]\nY = 2\n",
            "-".repeat(MAX_DEPTH),
            "\n".repeat(5)
        );
        let deep = check(&src).err().unwrap_or_else(|| panic!("passed"));
        let line = 1 + src[..deep.offset].matches('\n').count();
        assert_eq!(line, 5, "{deep:?}");
        assert_eq!(deep.depth, 1 + MAX_DEPTH, "the list, then the minuses");
    }

    #[test]
    fn the_deepest_file_let_through_is_within_reach_of_every_stack() {
        // What passes the check is small enough for the analysis stack many times
        // over: checked on an eighth of it, in a debug build.
        for (name, _) in shapes(1) {
            let src = deepest_allowed(name);
            let tree = std::thread::Builder::new()
                .stack_size(super::super::super::depth::ANALYSIS_STACK_BYTES / 8)
                .spawn(move || {
                    let parsed = ruff_python_parser::parse_unchecked_source(
                        &src,
                        ruff_python_ast::PySourceType::Python,
                    );
                    // Dropped the ordinary, recursive way.
                    drop(parsed);
                })
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(tree.join().is_ok(), "{name}");
        }
    }

    #[test]
    fn a_deep_tree_is_dropped_without_recursion() {
        // Far deeper than any check lets through, on a stack a recursive drop
        // overflows (tried: it aborts the test binary).
        for (name, src) in shapes(5_000) {
            let dropped = std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let parsed = ruff_python_parser::parse_unchecked_source(
                        &src,
                        ruff_python_ast::PySourceType::Python,
                    );
                    drop(Tree(parsed.into_syntax()));
                })
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(dropped.join().is_ok(), "{name}");
        }
    }
}
