//! jq filters for declared sources (jaq-core 3.1, jaq-std 3.0, jaq-json 2.0): compiled once at
//! startup, run per delivery with `$headers` and `$query` bound. The jq library is there, minus
//! `env` (the server's environment holds secrets).

use jaq_core::compile::{self, Undefined};
use jaq_core::data::JustLut;
use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Exn, Vars};
use jaq_json::{Num, Val};

/// A compiled filter. It owns everything it needs (no borrow of the source text),
/// is `Send + Sync` (see §4) and can be shared through `Arc` or a `&'static`.
pub type JqFilter = jaq_core::Filter<JustLut<Val>>;

/// Global variables, in the order in which their *values* are passed to `Vars::new`.
const GLOBALS: [&str; 2] = ["$headers", "$query"];

// Compile-time proof of the thread-safety claim in §4.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<JqFilter>();
};

/// Parse and compile `code` with the jq standard library (jaq-core + jaq-std + jaq-json
/// definitions and native functions) and the globals `$headers`, `$query`.
/// Errors are rendered as one line each: "expected term, unexpected end of input at line 1, column 11".
pub fn compile(code: &str) -> Result<JqFilter, String> {
    let arena = Arena::default();
    let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
    let loader = Loader::new(defs); // module loading (`include`/`import "m"`) fails: no reader set
    let modules = loader
        .load(&arena, File { code, path: () })
        .map_err(render_load_errors)?;
    // `import "data" as $x;` adds a global that `run` would not supply: reject it, like
    // jaq-all's `compile_with` does.
    load::import(&modules, |_| Err("importing data files is not supported".into()))
        .map_err(render_load_errors)?;

    let funs = jaq_core::funs::<JustLut<Val>>()
        .chain(jaq_std::funs::<JustLut<Val>>())
        .chain(jaq_json::funs::<JustLut<Val>>())
        // `env` returns the server's process environment (secrets!). No prelude definition
        // uses it, so dropping it is safe. Do NOT drop `halt`/`stderr_empty`/`debug_empty`:
        // prelude definitions (`halt_error`, `stderr`, `debug`) call them and the whole
        // prelude is compiled eagerly, so compilation would fail.
        .filter(|(name, _, _)| *name != "env");

    Compiler::default()
        .with_funs(funs)
        .with_global_vars(GLOBALS)
        .compile(modules)
        .map_err(render_compile_errors)
}

/// Run `filter` on `input` with `$headers`/`$query` bound; collect every output.
/// Stops at the first runtime error (outputs produced before it are discarded).
pub fn run(filter: &JqFilter, input: Val, headers: &Val, query: &Val) -> Result<Vec<Val>, String> {
    let vars = Vars::new([headers.clone(), query.clone()]); // same order as GLOBALS
    let ctx = Ctx::<JustLut<Val>>::new(&filter.lut, vars);
    filter
        .id
        .run((ctx, input))
        .map(|r| r.map_err(exn_to_string))
        .collect()
}

/// Same, but only the first output (evaluation is lazy, so the rest is never computed).
/// `Ok(None)` = the filter produced no output (e.g. `empty`, `select(false)`, `try` that failed).
pub fn run_first(filter: &JqFilter, input: Val, headers: &Val, query: &Val) -> Result<Option<Val>, String> {
    let vars = Vars::new([headers.clone(), query.clone()]);
    let ctx = Ctx::<JustLut<Val>>::new(&filter.lut, vars);
    filter
        .id
        .run((ctx, input))
        .next()
        .transpose()
        .map_err(exn_to_string)
}

/// Never use `jaq_core::unwrap_valr` in a server: on `halt`/`halt_error` it calls
/// `std::process::exit` (quote Q9).
fn exn_to_string(e: Exn<'_, Val>) -> String {
    match e.get_err() {
        // `into_val` gives the raw `error(...)` payload; a text string is shown unquoted,
        // built-in errors ("cannot index ...") are already text.
        Ok(err) => match err.into_val() {
            Val::TStr(b) => String::from_utf8_lossy(&b).into_owned(),
            other => other.to_string(),
        },
        Err(e) => match e.get_halt() {
            Ok(code) => format!("filter called halt (exit code {code})"),
            Err(e) => format!("internal jaq exception: {e:?}"),
        },
    }
}

// ---------- error rendering (parse / compile) ----------

fn render_load_errors(errs: load::Errors<&str, ()>) -> String {
    let mut out = Vec::new();
    for (file, err) in errs {
        match err {
            load::Error::Io(es) => {
                for (path, msg) in es {
                    out.push(located(file.code, path, &format!("cannot load {path:?}: {msg}")));
                }
            }
            load::Error::Lex(es) => {
                for (expected, found) in es {
                    out.push(located(
                        file.code,
                        found,
                        &format!("expected {}", expected.as_str()),
                    ));
                }
            }
            load::Error::Parse(es) => {
                for (expected, found) in es {
                    let got = if found.is_empty() {
                        "unexpected end of input"
                    } else {
                        "unexpected token"
                    };
                    out.push(located(
                        file.code,
                        found,
                        &format!("expected {}, {got}", expected.as_str()),
                    ));
                }
            }
        }
    }
    out.join("; ")
}

fn render_compile_errors(errs: compile::Errors<&str, ()>) -> String {
    let mut out = Vec::new();
    for (file, es) in errs {
        for (name, undefined) in es {
            let what = match undefined {
                Undefined::Filter(arity) => format!("undefined filter `{name}/{arity}`"),
                other => format!("undefined {} `{name}`", other.as_str()),
            };
            out.push(located(file.code, name, &what));
        }
    }
    out.join("; ")
}

/// `part` is a sub-slice of `code` (jaq's errors point into the source). Checked version of
/// `jaq_core::load::span`, which would underflow if `part` came from another string.
fn located(code: &str, part: &str, msg: &str) -> String {
    let start = (part.as_ptr() as usize).checked_sub(code.as_ptr() as usize);
    match start.filter(|s| s + part.len() <= code.len()) {
        Some(off) => {
            let before = &code[..off];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("{msg} at line {line}, column {col}")
        }
        None => msg.to_owned(),
    }
}

// ---------- serde_json <-> jaq Val ----------

/// serde_json::Value -> Val (no extra crate features). Do this once per delivery and
/// `clone()` the result for each field filter (arrays/objects are `Rc`-shared).
pub fn from_json(v: &serde_json::Value) -> Val {
    use serde_json::Value as J;
    match v {
        J::Null => Val::Null,
        J::Bool(b) => Val::Bool(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Val::Num(Num::from_integral(i)),
            (None, Some(u)) => Val::Num(Num::from_integral(u)),
            _ => Val::Num(Num::Float(n.as_f64().unwrap_or(f64::NAN))),
        },
        J::String(s) => Val::from(s.clone()),
        J::Array(a) => a.iter().map(from_json).collect(), // FromIterator<Val> for Val -> Arr
        J::Object(o) => Val::obj(
            o.iter()
                .map(|(k, v)| (Val::from(k.clone()), from_json(v)))
                .collect(),
        ),
    }
}

/// Val -> serde_json::Value. NaN/±Infinity become null (as jq does); byte strings and
/// invalid UTF-8 are decoded lossily; non-string object keys (legal in jaq) are rendered as JSON text.
pub fn to_json(v: &Val) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Val::Null => J::Null,
        Val::Bool(b) => J::Bool(*b),
        Val::Num(n) => match n {
            Num::Int(i) => J::from(*i),
            Num::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Num::BigInt(_) | Num::Dec(_) => n
                .to_string()
                .parse::<serde_json::Number>()
                .map_or(J::Null, J::Number),
        },
        Val::TStr(b) | Val::BStr(b) => J::String(String::from_utf8_lossy(b).into_owned()),
        Val::Arr(a) => J::Array(a.iter().map(to_json).collect()),
        Val::Obj(o) => J::Object(o.iter().map(|(k, v)| (key_string(k), to_json(v))).collect()),
    }
}

fn key_string(k: &Val) -> String {
    match k {
        Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
        other => other.to_string(),
    }
}

/// Build `$headers` / `$query`: object of string -> string. Later duplicates win.
pub fn string_map<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Val {
    Val::obj(
        pairs
            .into_iter()
            .map(|(k, v)| (Val::from(k.into()), Val::from(v.into())))
            .collect(),
    )
}
