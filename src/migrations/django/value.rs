//! Static evaluation of the Python literal subset Django migrations are
//! written in (strings, numbers, containers, calls, dotted names) into
//! `Value`, without ever executing anything.

use std::borrow::Cow;
use std::collections::HashMap;

use ruff_python_ast::{Expr, Number, UnaryOp};
use ruff_text_size::Ranged;

use super::super::depth::{MAX_DEPTH, too_deep};

/// What a level of a Python file's nesting is, for the problem text.
pub(crate) const PYTHON_LEVELS: &str = "brackets, operators, blocks";

/// An evaluated expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Str(String),
    Bytes(Vec<u8>),
    /// Literal text of a number; migrations never compute with them.
    Number(String),
    Bool(bool),
    None,
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Set(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Call(Call),
    /// A dotted name, qualified through the module's imports
    /// (`models.CASCADE` -> `django.db.models.CASCADE`).
    Name(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    /// Dotted, import-qualified callee.
    pub func: String,
    pub args: Vec<Value>,
    pub kwargs: Vec<(String, Value)>,
    /// 1-based line of the call.
    pub line: usize,
}

impl Call {
    /// Last segment of the callee: `django.db.migrations.AddField` -> `AddField`.
    pub fn short_name(&self) -> &str {
        self.func.rsplit('.').next().unwrap_or(&self.func)
    }

    /// Argument given either at `pos` or as keyword `name`.
    pub fn arg(&self, pos: usize, name: &str) -> Option<&Value> {
        self.kwargs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .or_else(|| self.args.get(pos))
    }

    pub fn kwarg(&self, name: &str) -> Option<&Value> {
        self.kwargs.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    pub fn str_arg(&self, pos: usize, name: &str) -> Option<&str> {
        self.arg(pos, name).and_then(Value::as_str)
    }
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// Elements of a list or tuple.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Tuple(v) => Some(v),
            _ => None,
        }
    }

    pub fn dict_get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, Value::None)
    }

    /// Levels of nesting: 1 for a leaf. Without recursion, so any value may be asked.
    pub fn depth(&self) -> usize {
        let mut deepest = 0;
        let mut pending = vec![(self, 1)];
        while let Some((value, depth)) = pending.pop() {
            deepest = deepest.max(depth);
            match value {
                Value::Tuple(items) | Value::List(items) | Value::Set(items) => {
                    pending.extend(items.iter().map(|v| (v, depth + 1)));
                }
                Value::Dict(items) => {
                    for (k, v) in items {
                        pending.push((k, depth + 1));
                        pending.push((v, depth + 1));
                    }
                }
                Value::Call(call) => {
                    pending.extend(call.args.iter().map(|v| (v, depth + 1)));
                    pending.extend(call.kwargs.iter().map(|(_, v)| (v, depth + 1)));
                }
                Value::Str(_)
                | Value::Bytes(_)
                | Value::Number(_)
                | Value::Bool(_)
                | Value::None
                | Value::Name(_) => {}
            }
        }
        deepest
    }
}

/// Why an expression could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EvalError {
    pub line: usize,
    pub message: String,
}

/// Maps byte offsets to 1-based line numbers.
pub(crate) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { starts }
    }

    pub fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }

    pub fn line_of(&self, node: &impl Ranged) -> usize {
        self.line(node.range().start().to_usize())
    }
}

/// Evaluation context of one migration module.
pub(crate) struct Evaluator<'a> {
    pub lines: &'a LineIndex,
    /// Module-level names bound to literals before the Migration class, with
    /// the depth of each value (a name used inside a literal nests it deeper).
    pub consts: HashMap<String, (Value, usize)>,
    /// Local name -> qualified module path, from the module's imports.
    pub imports: HashMap<String, String>,
    pub auth_user_model: &'a str,
}

impl Evaluator<'_> {
    pub fn eval(&self, expr: &Expr) -> Result<Value, EvalError> {
        self.eval_at(expr, 1)
    }

    /// `expr`, `depth` levels below the statement it is part of: nothing deeper
    /// than [`MAX_DEPTH`] is evaluated (nor built: values are dropped recursively).
    pub fn eval_at(&self, expr: &Expr, depth: usize) -> Result<Value, EvalError> {
        if depth > MAX_DEPTH {
            return Err(EvalError {
                line: self.lines.line_of(expr),
                message: too_deep(depth, PYTHON_LEVELS),
            });
        }
        let inner = depth + 1;
        Ok(match expr {
            Expr::StringLiteral(s) => Value::Str(s.value.to_str().to_string()),
            Expr::BytesLiteral(b) => Value::Bytes(Cow::<[u8]>::from(&b.value).into_owned()),
            Expr::NumberLiteral(n) => Value::Number(number_text(&n.value)),
            Expr::BooleanLiteral(b) => Value::Bool(b.value),
            Expr::NoneLiteral(_) => Value::None,
            Expr::Tuple(t) => Value::Tuple(self.eval_all(&t.elts, inner)?),
            Expr::List(l) => Value::List(self.eval_all(&l.elts, inner)?),
            Expr::Set(s) => Value::Set(self.eval_all(&s.elts, inner)?),
            Expr::Dict(d) => {
                let mut items = Vec::with_capacity(d.items.len());
                for item in &d.items {
                    let Some(key) = &item.key else {
                        return Err(self.unsupported(&item.value, "dict unpacking (**)"));
                    };
                    items.push((self.eval_at(key, inner)?, self.eval_at(&item.value, inner)?));
                }
                Value::Dict(items)
            }
            Expr::UnaryOp(u) => match (&u.op, self.eval_at(&u.operand, inner)?) {
                (UnaryOp::USub, Value::Number(n)) => Value::Number(format!("-{n}")),
                (UnaryOp::UAdd, Value::Number(n)) => Value::Number(n),
                _ => return Err(self.unsupported(expr, "unary operation")),
            },
            Expr::Name(_) | Expr::Attribute(_) => self.eval_name(expr, depth)?,
            Expr::Call(call) => {
                let func = self.dotted(&call.func)?;
                let mut args = Vec::with_capacity(call.arguments.args.len());
                for arg in &call.arguments.args {
                    if matches!(arg, Expr::Starred(_)) {
                        return Err(self.unsupported(arg, "argument unpacking (*)"));
                    }
                    args.push(self.eval_at(arg, inner)?);
                }
                let mut kwargs = Vec::with_capacity(call.arguments.keywords.len());
                for kw in &call.arguments.keywords {
                    let Some(name) = &kw.arg else {
                        return Err(self.unsupported(&kw.value, "keyword unpacking (**)"));
                    };
                    kwargs.push((name.as_str().to_string(), self.eval_at(&kw.value, inner)?));
                }
                if func.rsplit('.').next() == Some("swappable_dependency") {
                    // django.db.migrations.swappable_dependency(value) is
                    // (value.split(".", 1)[0], "__first__").
                    if let [Value::Str(model)] = args.as_slice() {
                        let app = model.split('.').next().unwrap_or(model).to_string();
                        return Ok(Value::Tuple(vec![
                            Value::Str(app),
                            Value::Str("__first__".into()),
                        ]));
                    }
                }
                Value::Call(Call {
                    func,
                    args,
                    kwargs,
                    line: self.lines.line_of(expr),
                })
            }
            // Functions handed to RunPython are only ever named, never run.
            Expr::Lambda(_) => Value::Name("<lambda>".into()),
            other => return Err(self.unsupported(other, describe(other))),
        })
    }

    fn eval_all(&self, exprs: &[Expr], depth: usize) -> Result<Vec<Value>, EvalError> {
        exprs
            .iter()
            .map(|e| {
                if matches!(e, Expr::Starred(_)) {
                    Err(self.unsupported(e, "unpacking (*)"))
                } else {
                    self.eval_at(e, depth)
                }
            })
            .collect()
    }

    fn eval_name(&self, expr: &Expr, depth: usize) -> Result<Value, EvalError> {
        if let Expr::Name(n) = expr
            && let Some((v, nested)) = self.consts.get(n.id.as_str())
        {
            // `B = [A]`, `C = [B]`, ...: each line is shallow, the value is not.
            let depth = depth - 1 + nested;
            if depth > MAX_DEPTH {
                return Err(EvalError {
                    line: self.lines.line_of(expr),
                    message: format!(
                        "{} (through the name {})",
                        too_deep(depth, PYTHON_LEVELS),
                        n.id
                    ),
                });
            }
            return Ok(v.clone());
        }
        let name = self.dotted(expr)?;
        if name == "django.conf.settings.AUTH_USER_MODEL" || name == "settings.AUTH_USER_MODEL" {
            return Ok(Value::Str(self.auth_user_model.to_string()));
        }
        Ok(Value::Name(name))
    }

    /// `a.b.c` with `a` qualified through the imports.
    fn dotted(&self, expr: &Expr) -> Result<String, EvalError> {
        let mut parts = Vec::new();
        let mut cur = expr;
        loop {
            match cur {
                Expr::Attribute(a) => {
                    parts.push(a.attr.as_str());
                    cur = &a.value;
                }
                Expr::Name(n) => {
                    let head = n.id.as_str();
                    let head = self.imports.get(head).map(String::as_str).unwrap_or(head);
                    let mut out = head.to_string();
                    for p in parts.iter().rev() {
                        out.push('.');
                        out.push_str(p);
                    }
                    return Ok(out);
                }
                other => return Err(self.unsupported(other, describe(other))),
            }
        }
    }

    fn unsupported(&self, expr: &impl Ranged, what: &str) -> EvalError {
        EvalError {
            line: self.lines.line_of(expr),
            message: format!("cannot evaluate statically: {what}"),
        }
    }
}

fn number_text(n: &Number) -> String {
    match n {
        Number::Int(i) => i.to_string(),
        Number::Float(f) => f.to_string(),
        Number::Complex { real, imag } => format!("({real}+{imag}j)"),
    }
}

fn describe(expr: &Expr) -> &'static str {
    match expr {
        Expr::BoolOp(_) => "boolean operation",
        Expr::Named(_) => "assignment expression",
        Expr::BinOp(_) => "binary operation",
        Expr::UnaryOp(_) => "unary operation",
        Expr::Lambda(_) => "lambda",
        Expr::If(_) => "conditional expression",
        Expr::Dict(_) => "dict",
        Expr::Set(_) => "set",
        Expr::ListComp(_) => "list comprehension",
        Expr::SetComp(_) => "set comprehension",
        Expr::DictComp(_) => "dict comprehension",
        Expr::Generator(_) => "generator expression",
        Expr::Await(_) => "await",
        Expr::Yield(_) | Expr::YieldFrom(_) => "yield",
        Expr::Compare(_) => "comparison",
        Expr::Call(_) => "call",
        Expr::FString(_) => "f-string",
        Expr::TString(_) => "t-string",
        Expr::StringLiteral(_) => "string",
        Expr::BytesLiteral(_) => "bytes",
        Expr::NumberLiteral(_) => "number",
        Expr::BooleanLiteral(_) => "bool",
        Expr::NoneLiteral(_) => "None",
        Expr::EllipsisLiteral(_) => "ellipsis",
        Expr::Attribute(_) => "attribute of a non-name",
        Expr::Subscript(_) => "subscript",
        Expr::Starred(_) => "unpacking (*)",
        Expr::Name(_) => "name",
        Expr::List(_) => "list",
        Expr::Tuple(_) => "tuple",
        Expr::Slice(_) => "slice",
        Expr::IpyEscapeCommand(_) => "IPython escape",
    }
}
