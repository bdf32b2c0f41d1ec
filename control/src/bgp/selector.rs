//! Calico's label selectors, as `BGPPeer`'s `nodeSelector` and `peerSelector` use them:
//! which nodes (by their `metadata.labels`) a peering applies to.
//!
//! The subset tapwire reads: `all()`, `has(key)`, `key == 'value'`, `key != 'value'`,
//! `key in {'a', 'b'}`, `key not in {'a', 'b'}`, `!`, `&&`, `||` and parentheses, with
//! `!` binding tightest and `&&` before `||` (Calico's precedence). Values are quoted with
//! `'` or `"`. Anything else (`contains`, `starts with`, `global()`, …) is refused when the
//! document is applied, with the position of what was not understood. Sans-IO.

use std::collections::BTreeMap;
use std::fmt;

/// A parsed selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    expr: Expr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    All,
    Has(String),
    In {
        key: String,
        values: Vec<String>,
        negated: bool,
    },
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

impl Selector {
    /// Parses selector text; the error says what was expected where.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let mut parser = Parser {
            text,
            at: 0,
            depth: 0,
            terms: 0,
        };
        let expr = parser.or()?;
        parser.skip_space();
        if parser.at < text.len() {
            return Err(parser.error("an operator (&&, ||) or the end"));
        }
        Ok(Selector { expr })
    }

    /// Whether a node with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.expr.matches(labels)
    }

    /// Whether this is `all()` (every node).
    pub fn is_all(&self) -> bool {
        self.expr == Expr::All
    }
}

impl Expr {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Expr::All => true,
            Expr::Has(key) => labels.contains_key(key),
            Expr::In {
                key,
                values,
                negated,
            } => {
                let found = labels.get(key).is_some_and(|v| values.contains(v));
                found != *negated
            }
            Expr::Not(inner) => !inner.matches(labels),
            Expr::And(a, b) => a.matches(labels) && b.matches(labels),
            Expr::Or(a, b) => a.matches(labels) || b.matches(labels),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.expr, f)
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::All => f.write_str("all()"),
            Expr::Has(key) => write!(f, "has({key})"),
            Expr::In {
                key,
                values,
                negated,
            } => match (values.as_slice(), negated) {
                ([one], false) => write!(f, "{key} == '{one}'"),
                ([one], true) => write!(f, "{key} != '{one}'"),
                _ => {
                    let list: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
                    let op = if *negated { "not in" } else { "in" };
                    write!(f, "{key} {op} {{{}}}", list.join(", "))
                }
            },
            Expr::Not(inner) => write!(f, "!({inner})"),
            Expr::And(a, b) => write!(f, "({a} && {b})"),
            Expr::Or(a, b) => write!(f, "({a} || {b})"),
        }
    }
}

/// Nesting deeper than this is refused (a selector is a line of text, not a program).
const MAX_DEPTH: usize = 32;
/// More operands than this are refused: a chain of `&&`/`||` builds a tree as deep as it
/// is long, which matching, printing and dropping walk recursively.
const MAX_TERMS: usize = 256;

struct Parser<'t> {
    text: &'t str,
    at: usize,
    depth: usize,
    /// Operands read so far (see [`MAX_TERMS`]).
    terms: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        self.text.get(self.at..).unwrap_or("")
    }

    fn error(&self, expected: &str) -> String {
        let found: String = self.rest().chars().take(16).collect();
        if found.is_empty() {
            format!("expected {expected} at the end of the selector")
        } else {
            format!(
                "expected {expected} at character {} (found {found:?})",
                self.text[..self.at].chars().count() + 1
            )
        }
    }

    fn skip_space(&mut self) {
        let trimmed = self.rest().trim_start();
        self.at = self.text.len() - trimmed.len();
    }

    /// Takes `token` (after spaces) if it comes next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.rest().starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    /// Takes the word `word` (not the start of a longer key) if it comes next.
    fn eat_word(&mut self, word: &str) -> bool {
        self.skip_space();
        let rest = self.rest();
        let after = rest.get(word.len()..).and_then(|r| r.chars().next());
        if rest.starts_with(word) && !after.is_some_and(is_key_char) {
            self.at += word.len();
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut expr = self.and()?;
        while self.eat("||") {
            expr = Expr::Or(Box::new(expr), Box::new(self.and()?));
        }
        Ok(expr)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut expr = self.unary()?;
        while self.eat("&&") {
            expr = Expr::And(Box::new(expr), Box::new(self.unary()?));
        }
        Ok(expr)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(format!("more than {MAX_TERMS} terms"));
        }
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("nested more than {MAX_DEPTH} levels deep"));
        }
        let expr = if self.eat("!") && !self.rest().starts_with('=') {
            Expr::Not(Box::new(self.unary()?))
        } else {
            self.primary()?
        };
        self.depth -= 1;
        Ok(expr)
    }

    fn primary(&mut self) -> Result<Expr, String> {
        if self.eat("(") {
            let inner = self.or()?;
            if !self.eat(")") {
                return Err(self.error("')'"));
            }
            return Ok(inner);
        }
        if self.eat_word("all") {
            if self.eat("(") && self.eat(")") {
                return Ok(Expr::All);
            }
            return Err(self.error("'()' after all"));
        }
        if self.eat_word("has") {
            if !self.eat("(") {
                return Err(self.error("'(' after has"));
            }
            let key = self.key()?;
            if !self.eat(")") {
                return Err(self.error("')'"));
            }
            return Ok(Expr::Has(key));
        }
        let key = self.key()?;
        if self.eat("==") {
            return Ok(Expr::In {
                key,
                values: vec![self.value()?],
                negated: false,
            });
        }
        if self.eat("!=") {
            return Ok(Expr::In {
                key,
                values: vec![self.value()?],
                negated: true,
            });
        }
        let negated = self.eat_word("not");
        if self.eat_word("in") {
            return Ok(Expr::In {
                key,
                values: self.set()?,
                negated,
            });
        }
        Err(self.error(if negated {
            "'in' after not"
        } else {
            "==, !=, in or not in after a label key"
        }))
    }

    fn key(&mut self) -> Result<String, String> {
        self.skip_space();
        let len = self
            .rest()
            .char_indices()
            .find(|(_, c)| !is_key_char(*c))
            .map_or(self.rest().len(), |(i, _)| i);
        if len == 0 {
            return Err(self.error("a label key, all(), has(…), '!' or '('"));
        }
        let key = self.rest()[..len].to_string();
        self.at += len;
        Ok(key)
    }

    fn value(&mut self) -> Result<String, String> {
        self.skip_space();
        let quote = match self.rest().chars().next() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(self.error("a quoted value ('…' or \"…\")")),
        };
        let body = &self.rest()[1..];
        let Some(end) = body.find(quote) else {
            return Err(self.error("a closing quote"));
        };
        let value = body[..end].to_string();
        self.at += end + 2;
        Ok(value)
    }

    fn set(&mut self) -> Result<Vec<String>, String> {
        if !self.eat("{") {
            return Err(self.error("'{' starting a set of values"));
        }
        let mut values = Vec::new();
        if self.eat("}") {
            return Ok(values);
        }
        loop {
            values.push(self.value()?);
            if self.eat("}") {
                return Ok(values);
            }
            if !self.eat(",") {
                return Err(self.error("',' or '}'"));
            }
        }
    }
}

/// Characters of a label key (`app`, `kubernetes.io/hostname`, `route-reflector`).
fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_chain_of_too_many_terms_is_refused_not_recursed_into() {
        let chain = |n: usize| vec!["all()"; n].join(" || ");
        let ok = Selector::parse(&chain(MAX_TERMS)).expect("at the limit");
        assert!(ok.matches(&labels(&[])));
        let err = Selector::parse(&chain(70_000)).expect_err("a 70,000-term chain");
        assert_eq!(err, format!("more than {MAX_TERMS} terms"));
        let and_chain = vec!["has(a)"; MAX_TERMS + 1].join(" && ");
        assert!(Selector::parse(&and_chain).is_err());
    }

    #[test]
    fn calicos_selectors_select_what_calico_selects() {
        let rr = labels(&[("route-reflector", "true"), ("rack", "a")]);
        let plain = labels(&[("rack", "b")]);
        for (text, on_rr, on_plain) in [
            ("all()", true, true),
            ("  all( )  ", true, true),
            ("has(route-reflector)", true, false),
            ("!has(route-reflector)", false, true),
            ("route-reflector == 'true'", true, false),
            ("route-reflector == \"true\"", true, false),
            ("route-reflector != 'true'", false, true),
            ("rack in {'a', 'c'}", true, false),
            ("rack not in {'a', 'c'}", false, true),
            ("rack in {}", false, false),
            ("has(rack) && rack == 'b'", false, true),
            ("rack == 'a' || rack == 'b'", true, true),
            ("!(rack == 'a' || rack == 'b')", false, false),
            // && binds tighter than ||.
            (
                "rack == 'b' || has(route-reflector) && rack == 'x'",
                false,
                true,
            ),
            ("kubernetes.io/hostname == 'n1'", false, false),
        ] {
            let selector = Selector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(selector.matches(&rr), on_rr, "{text} on the reflector");
            assert_eq!(selector.matches(&plain), on_plain, "{text} on a plain node");
            // What it prints parses back to the same selector.
            assert_eq!(Selector::parse(&selector.to_string()).unwrap(), selector);
        }
        assert!(Selector::parse("all()").unwrap().is_all());
        assert!(!Selector::parse("has(x)").unwrap().is_all());
    }

    #[test]
    fn what_it_does_not_understand_is_an_error_saying_where() {
        for (text, expected) in [
            ("", "a label key"),
            ("all", "'()' after all"),
            ("has(x", "')'"),
            ("rack == a", "a quoted value"),
            ("rack == 'a", "a closing quote"),
            ("rack contains 'a'", "==, !=, in or not in"),
            ("rack not 'a'", "'in' after not"),
            ("rack in 'a'", "'{'"),
            ("rack in {'a' 'b'}", "',' or '}'"),
            ("has(x) && ", "a label key"),
            ("has(x) has(y)", "an operator"),
            ("(has(x)", "')'"),
            ("global()", "==, !=, in or not in"),
        ] {
            let err = Selector::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        let err = Selector::parse("has(x) has(y)").unwrap_err();
        assert!(err.contains("character 8"), "{err}");
        let deep = format!("{}all(){}", "(".repeat(100), ")".repeat(100));
        assert!(Selector::parse(&deep).unwrap_err().contains("nested"));
        let bangs = format!("{}all()", "!".repeat(100));
        assert!(Selector::parse(&bangs).unwrap_err().contains("nested"));
    }
}
