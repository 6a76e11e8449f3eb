//! jq expressions, compiled once at registration and evaluated by the state machine.
//! Evaluation is pure: same input, same output.
//!
//! Built on jaq (a jq clone in Rust). The standard library is loaded minus the few filters
//! that read the outside world (`now`, `env`, `input`, `debug`, ...): a replayed run must
//! make the same decisions it made the first time, so an expression may only depend on
//! its input.

use std::sync::Arc;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data};
use jaq_json::{Num, Val};
use serde_json::Value;

type Filter = jaq_core::Filter<data::JustLut<Val>>;

/// Filters that would make evaluation depend on the clock, the process environment or the
/// local time zone, or that write to a log or halt the process. Leaving them undefined
/// turns their use into a compile error at registration instead of a non-deterministic
/// replay later. Definitions are dropped together with the natives they call, because jaq
/// compiles every loaded definition.
const IMPURE_NATIVES: &[&str] = &[
    "now",
    "env",
    "halt",
    "localtime",
    "strflocaltime",
    "debug_empty",
    "stderr_empty",
];
const IMPURE_DEFS: &[&str] = &["debug", "stderr", "halt", "halt_error"];

/// A compiled jq filter and the text it came from.
///
/// Cheap to clone: the compiled program is shared.
#[derive(Clone)]
pub struct Expr {
    src: String,
    filter: Arc<Filter>,
}

// The state machine and definitions are shared across threads; keep that a compile-time fact.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Expr>();
};

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expr({:?})", self.src)
    }
}

/// Why an expression did not compile or evaluate; the message is meant for the user who
/// wrote the expression.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ExprError(pub String);

impl Expr {
    /// Compiles `src`; the error says what is wrong and where in the expression.
    pub fn compile(src: &str) -> Result<Expr, ExprError> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs().filter(|d| !IMPURE_DEFS.contains(&d.name)))
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs().filter(|(name, ..)| !IMPURE_NATIVES.contains(name)))
            .chain(jaq_json::funs());

        let arena = Arena::default();
        let modules = Loader::new(defs)
            .load(
                &arena,
                File {
                    code: src,
                    path: (),
                },
            )
            .map_err(|errs| ExprError(load_errors(src, errs)))?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errs| ExprError(compile_errors(src, errs)))?;
        Ok(Expr {
            src: src.to_string(),
            filter: Arc::new(filter),
        })
    }

    /// The jq text it was compiled from.
    pub fn source(&self) -> &str {
        &self.src
    }

    /// The first output of the filter run on `input`; an error when it fails or yields nothing.
    pub fn eval(&self, input: &Value) -> Result<Value, ExprError> {
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut outputs = self
            .filter
            .id
            .run((ctx, to_val(input)))
            .map(jaq_core::unwrap_valr);
        match outputs.next() {
            Some(Ok(v)) => Ok(from_val(&v)),
            Some(Err(e)) => Err(ExprError(format!("`{}` failed: {e}", self.src))),
            None => Err(ExprError(format!("`{}` produced no value", self.src))),
        }
    }

    /// jq truthiness of the first output: everything but `false` and `null` is true.
    pub fn eval_bool(&self, input: &Value) -> Result<bool, ExprError> {
        Ok(!matches!(
            self.eval(input)?,
            Value::Null | Value::Bool(false)
        ))
    }
}

/// Where `part` (a sub-slice of `src`, as jaq reports it) starts, 1-based in characters.
fn column(src: &str, part: &str) -> Option<usize> {
    let offset = (part.as_ptr() as usize).checked_sub(src.as_ptr() as usize)?;
    (offset <= src.len() && src.is_char_boundary(offset)).then(|| src[..offset].chars().count() + 1)
}

fn located(src: &str, part: &str, what: String) -> String {
    match (column(src, part), part.is_empty()) {
        (Some(col), false) => {
            let near: String = part.chars().take(20).collect();
            format!("{what} at column {col}, near `{near}`")
        }
        _ => format!("{what} at end of expression"),
    }
}

fn load_errors(src: &str, errs: jaq_core::load::Errors<&str, ()>) -> String {
    use jaq_core::load::Error;
    let mut msgs = Vec::new();
    for (_file, err) in errs {
        match err {
            Error::Io(es) => msgs.extend(es.into_iter().map(|(path, e)| format!("{path}: {e}"))),
            Error::Lex(es) => {
                msgs.extend(es.into_iter().map(|(expect, part)| {
                    located(src, part, format!("expected {}", expect.as_str()))
                }))
            }
            Error::Parse(es) => {
                msgs.extend(es.into_iter().map(|(expect, part)| {
                    located(src, part, format!("expected {}", expect.as_str()))
                }))
            }
        }
    }
    format!("invalid jq `{src}`: {}", msgs.join("; "))
}

fn compile_errors(src: &str, errs: jaq_core::compile::Errors<&str, ()>) -> String {
    use jaq_core::compile::Undefined;
    let msgs: Vec<String> = errs
        .into_iter()
        .flat_map(|(_file, es)| es)
        .map(|(name, undefined)| {
            let what = match undefined {
                Undefined::Filter(arity) => format!("undefined filter `{name}/{arity}`"),
                other => format!("undefined {} `{name}`", other.as_str()),
            };
            located(src, name, what)
        })
        .collect();
    format!("invalid jq `{src}`: {}", msgs.join("; "))
}

fn to_val(v: &Value) -> Val {
    match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Val::Num(Num::from_integral(i))
            } else if let Some(u) = n.as_u64() {
                Val::Num(Num::from_integral(u))
            } else {
                Val::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => Val::from(s.clone()),
        Value::Array(a) => a.iter().map(to_val).collect(),
        Value::Object(o) => Val::obj(
            o.iter()
                .map(|(k, v)| (Val::from(k.clone()), to_val(v)))
                .collect(),
        ),
    }
}

fn from_val(v: &Val) -> Value {
    match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        // jq prints NaN as null and clamps infinities; JSON has neither.
        Val::Num(Num::Float(f)) if f.is_nan() => Value::Null,
        Val::Num(Num::Float(f)) if f.is_infinite() => {
            Value::from(if *f > 0.0 { f64::MAX } else { f64::MIN })
        }
        // Literals such as `1e1000` stay decimal text in jaq; they overflow to infinity here.
        Val::Num(n) => {
            let text = n.to_string();
            match text.parse::<serde_json::Number>() {
                Ok(n) => Value::Number(n),
                Err(_) => from_val(&Val::Num(Num::Float(text.parse().unwrap_or(f64::NAN)))),
            }
        }
        Val::TStr(b) | Val::BStr(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        Val::Arr(a) => Value::Array(a.iter().map(from_val).collect()),
        Val::Obj(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    // jaq allows non-string keys; JSON does not, so they become their text.
                    let key = match k {
                        Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
                        other => other.to_string(),
                    };
                    (key, from_val(v))
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Value {
        json!({
            "input": {"order_id": "o-1", "phone": null, "items": [1, 2, 3], "amount": 12.5},
            "steps": {
                "manual-check": {"output": {"ok": true}},
                "charge": {"output": {"risk": "high"}}
            }
        })
    }

    fn eval(src: &str) -> Result<Value, ExprError> {
        Expr::compile(src)?.eval(&ctx())
    }

    #[test]
    fn field_access() {
        assert_eq!(eval(".input.order_id").unwrap(), json!("o-1"));
        assert_eq!(eval(".input.amount").unwrap(), json!(12.5));
        assert_eq!(eval(".input.missing").unwrap(), Value::Null);
    }

    #[test]
    fn object_construction() {
        assert_eq!(
            eval("{order: .input.order_id, n: (.input.items | length)}").unwrap(),
            json!({"order": "o-1", "n": 3})
        );
    }

    #[test]
    fn bracket_access_with_dashes() {
        assert_eq!(
            eval(r#".steps["manual-check"].output"#).unwrap(),
            json!({"ok": true})
        );
    }

    #[test]
    fn comparisons_and_truthiness() {
        let high = Expr::compile(r#".steps.charge.output.risk == "high""#).unwrap();
        assert!(high.eval_bool(&ctx()).unwrap());
        let phone = Expr::compile(".input.phone != null").unwrap();
        assert!(!phone.eval_bool(&ctx()).unwrap());
        assert!(
            phone
                .eval_bool(&json!({"input": {"phone": "+4912"}}))
                .unwrap()
        );
    }

    #[test]
    fn standard_library_is_available() {
        assert_eq!(
            eval("[.input.items[] | select(. > 1)] | map(. * 2)").unwrap(),
            json!([4, 6])
        );
        assert_eq!(eval(r#".input | has("phone")"#).unwrap(), json!(true));
        assert_eq!(eval(".input.items[0] | tostring").unwrap(), json!("1"));
        assert_eq!(eval(r#".input.nope // "dflt""#).unwrap(), json!("dflt"));
        assert_eq!(eval(".input.items | add / length").unwrap(), json!(2.0));
    }

    #[test]
    fn numbers_outside_json_are_mapped_like_jq_does() {
        assert_eq!(eval("1e1000").unwrap(), json!(f64::MAX));
        assert_eq!(eval("-1e1000").unwrap(), json!(f64::MIN));
        assert_eq!(eval("nan").unwrap(), Value::Null);
        assert_eq!(
            Expr::compile(".").unwrap().eval(&json!(u64::MAX)).unwrap(),
            json!(u64::MAX)
        );
    }

    #[test]
    fn first_output_wins() {
        assert_eq!(eval(".input.items[]").unwrap(), json!(1));
    }

    #[test]
    fn syntax_error_names_position() {
        let err = Expr::compile("{order: .input.order_id").unwrap_err();
        assert!(err.0.contains("closing brace"), "{err}");
        let err = Expr::compile(".a | | .b").unwrap_err();
        assert!(err.0.contains("column 6"), "{err}");
    }

    #[test]
    fn undefined_filter_is_a_compile_error() {
        let err = Expr::compile(".x | frobnicate").unwrap_err();
        assert!(err.0.contains("undefined filter `frobnicate/0`"), "{err}");
        assert!(err.0.contains("column 6"), "{err}");
    }

    #[test]
    fn impure_filters_are_rejected() {
        for src in [
            "now",
            "env.HOME",
            "input",
            "$ENV",
            "debug",
            "halt_error",
            "localtime",
        ] {
            assert!(Expr::compile(src).is_err(), "{src} compiled");
        }
    }

    #[test]
    fn runtime_errors_and_empty_output() {
        let err = eval(r#"error("boom")"#).unwrap_err();
        assert!(err.0.contains("boom"), "{err}");
        let err = eval(".input.order_id | keys").unwrap_err();
        assert!(err.0.contains("failed"), "{err}");
        let err = eval("empty").unwrap_err();
        assert!(err.0.contains("no value"), "{err}");
    }

    #[test]
    fn clones_share_the_program() {
        let a = Expr::compile(".input.order_id").unwrap();
        let b = a.clone();
        assert!(Arc::ptr_eq(&a.filter, &b.filter));
        assert_eq!(b.source(), ".input.order_id");
    }
}

/// Text with `{jq}` placeholders, e.g. `Approve refund of {.input.amount}`: each placeholder
/// is a jq expression evaluated over the run context; strings are inserted as they are,
/// other values as compact JSON.
#[derive(Debug, Clone)]
pub struct Template {
    src: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Expr(Expr),
}

impl Template {
    /// Compiles every placeholder; an unbalanced `{` or invalid jq is an error naming it.
    pub fn parse(src: &str) -> Result<Template, ExprError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = src.char_indices().peekable();
        while let Some((start, c)) = chars.next() {
            if c != '{' {
                text.push(c);
                continue;
            }
            // Find the matching brace, skipping jq string literals.
            let (mut depth, mut in_str, mut escaped, mut end) = (1, false, false, None);
            for (i, c) in chars.by_ref() {
                match (in_str, escaped, c) {
                    (true, true, _) => escaped = false,
                    (true, false, '\\') => escaped = true,
                    (true, false, '"') => in_str = false,
                    (true, false, _) => {}
                    (false, _, '"') => in_str = true,
                    (false, _, '{') => depth += 1,
                    (false, _, '}') => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(i);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let Some(end) = end else {
                return Err(ExprError(format!(
                    "unclosed `{{` at character {start} of template {src:?}"
                )));
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            let expr = Expr::compile(&src[start + 1..end])
                .map_err(|e| ExprError(format!("placeholder at character {start}: {e}")))?;
            parts.push(Part::Expr(expr));
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template {
            src: src.to_string(),
            parts,
        })
    }

    /// The template text as written, placeholders included.
    pub fn source(&self) -> &str {
        &self.src
    }

    /// The text with each placeholder replaced by its value over `ctx`: strings as they
    /// are, other values as compact JSON. Fails when a placeholder fails or yields nothing.
    pub fn render(&self, ctx: &Value) -> Result<String, ExprError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Expr(e) => match e.eval(ctx)? {
                    Value::String(s) => out.push_str(&s),
                    other => out.push_str(&other.to_string()),
                },
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod template_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_are_rendered_strings_raw_and_values_as_json() {
        let t = Template::parse("Approve refund of {.input.amount} for {.input.who} ({ {a: 1} })")
            .unwrap();
        let out = t
            .render(&json!({"input": {"amount": 12.5, "who": "Ada"}}))
            .unwrap();
        assert_eq!(out, "Approve refund of 12.5 for Ada ({\"a\":1})");
    }

    #[test]
    fn an_unclosed_or_invalid_placeholder_is_an_error() {
        assert!(
            Template::parse("x {.input")
                .unwrap_err()
                .0
                .contains("unclosed")
        );
        assert!(Template::parse("x {.input | (}").is_err());
        assert_eq!(
            Template::parse("plain")
                .unwrap()
                .render(&json!({}))
                .unwrap(),
            "plain"
        );
    }
}
