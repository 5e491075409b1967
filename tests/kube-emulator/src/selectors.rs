//! Label and field selectors (`?labelSelector=`, `?fieldSelector=`), parsed and matched the way
//! the Kubernetes API server does (`k8s.io/apimachinery/pkg/labels` and `pkg/fields`). Pure code.
//!
//! The parse errors reproduce apimachinery's message text, because the server hands them back
//! verbatim in a 400 `Status` and clients (and tests) may look at them.

use std::collections::BTreeMap;

use serde_json::Value;

/// A parsed label selector: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`,
/// comma-separated (all must hold). `a>1` and `a<1` (integer comparisons) are accepted too, as
/// apimachinery does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the query-parameter syntax; the error is the API server's message text.
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut parser = Parser {
            items: lex(text),
            position: 0,
        };
        let mut requirements = parser.parse()?;
        // apimachinery sorts by key so equal selectors compare equal however they were written.
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// Whether an object with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

/// The selector string of a `metav1.LabelSelector` object, as
/// `metav1.LabelSelectorAsSelector(selector).String()` writes it: requirements sorted by key,
/// `k=v` for `matchLabels`, `k in (a,b)`, `k notin (a,b)`, `k` and `!k` for `matchExpressions`.
/// [`LabelSelector::parse`] reads it back, to match objects against a selector object.
pub fn label_selector_text(selector: &Value) -> String {
    let mut terms: Vec<(String, String)> = Vec::new();
    for (key, value) in selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let value = value.as_str().unwrap_or_default();
        terms.push((key.clone(), format!("{key}={value}")));
    }
    for expression in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = expression
            .get("key")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut values: Vec<&str> = expression
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        values.dedup();
        let term = match expression.get("operator").and_then(Value::as_str) {
            Some("In") => format!("{key} in ({})", values.join(",")),
            Some("NotIn") => format!("{key} notin ({})", values.join(",")),
            Some("Exists") => key.to_owned(),
            Some("DoesNotExist") => format!("!{key}"),
            _ => continue,
        };
        terms.push((key.to_owned(), term));
    }
    terms.sort_by(|a, b| a.0.cmp(&b.0));
    terms
        .into_iter()
        .map(|(_, term)| term)
        .collect::<Vec<_>>()
        .join(",")
}

/// One comma-separated term of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    test: Test,
}

/// What a requirement asks of the value under its key.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Test {
    /// `=`, `==` and `in`: the key exists with one of the values (a set, as the apiserver's
    /// `sets.String`: a budget naming a thousand Pods is matched in a lookup, not a scan).
    In(std::collections::BTreeSet<String>),
    /// `!=` and `notin`: the key is absent or has none of the values.
    NotIn(std::collections::BTreeSet<String>),
    Exists,
    DoesNotExist,
    /// `>`: the key exists and its value is an integer above the bound.
    GreaterThan(i64),
    /// `<`: the key exists and its value is an integer below the bound.
    LessThan(i64),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.test {
            Test::In(values) => value.is_some_and(|v| values.contains(v)),
            Test::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
            Test::Exists => value.is_some(),
            Test::DoesNotExist => value.is_none(),
            Test::GreaterThan(bound) => integer_label(value).is_some_and(|v| v > *bound),
            Test::LessThan(bound) => integer_label(value).is_some_and(|v| v < *bound),
        }
    }
}

fn integer_label(value: Option<&String>) -> Option<i64> {
    value.and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

#[derive(Clone, Copy, Debug)]
struct Item<'a> {
    token: Token,
    literal: &'a str,
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn symbol_token(symbol: &str) -> Option<Token> {
    Some(match symbol {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

/// Splits the selector into tokens, always ending with `EndOfString`. Only ASCII bytes delimit
/// tokens, so every slice boundary falls on a character boundary.
fn lex(input: &str) -> Vec<Item<'_>> {
    let bytes = input.as_bytes();
    let mut items = Vec::new();
    let mut pos = 0;
    loop {
        while pos < bytes.len() && is_whitespace(bytes[pos]) {
            pos += 1;
        }
        let start = pos;
        if pos == bytes.len() {
            items.push(Item {
                token: Token::EndOfString,
                literal: "",
            });
            return items;
        }
        let token = if is_special(bytes[pos]) {
            // The longest operator wins: `!=` and `==` over `!` and `=`.
            let pair = input.get(pos..pos + 2).and_then(symbol_token);
            pos += if pair.is_some() { 2 } else { 1 };
            pair.or_else(|| symbol_token(&input[start..pos]))
                .unwrap_or(Token::Identifier)
        } else {
            while pos < bytes.len() && !is_special(bytes[pos]) && !is_whitespace(bytes[pos]) {
                pos += 1;
            }
            match &input[start..pos] {
                "in" => Token::In,
                "notin" => Token::NotIn,
                _ => Token::Identifier,
            }
        };
        items.push(Item {
            token,
            literal: &input[start..pos],
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Parser (a transcription of apimachinery's recursive descent, including its messages)

/// Where the parser is: `in` and `notin` are operators after a key but plain values elsewhere
/// (`x in (in)` is legal).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

/// A binary operator as written, before its values are known.
#[derive(Clone, Copy)]
enum BinaryOp {
    In,
    NotIn,
    Equals,
    NotEquals,
    GreaterThan,
    LessThan,
}

struct Parser<'a> {
    items: Vec<Item<'a>>,
    position: usize,
}

impl<'a> Parser<'a> {
    fn lookahead(&self, context: Context) -> (Token, &'a str) {
        // The token list ends with EndOfString, which the parser never consumes past; clamping
        // keeps a logic slip from panicking.
        let item = self.items[self.position.min(self.items.len() - 1)];
        let token = match item.token {
            Token::In | Token::NotIn if context == Context::Values => Token::Identifier,
            token => token,
        };
        (token, item.literal)
    }

    fn consume(&mut self, context: Context) -> (Token, &'a str) {
        let item = self.lookahead(context);
        self.position += 1;
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        loop {
            let (token, literal) = self.lookahead(Context::Values);
            match token {
                Token::Identifier | Token::DoesNotExist => {
                    let requirement = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(requirement);
                    let (token, literal) = self.consume(Context::Values);
                    match token {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (next, literal) = self.lookahead(Context::Values);
                            if next != Token::Identifier && next != Token::DoesNotExist {
                                return Err(format!(
                                    "found '{literal}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => {
                            return Err(format!(
                                "found '{literal}', expected: ',' or 'end of string'"
                            ));
                        }
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => {
                    return Err(format!(
                        "found '{literal}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, unary) = self.parse_key_and_infer_operator()?;
        if let Some(test) = unary {
            return Ok(Requirement {
                key: key.to_owned(),
                test,
            });
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            BinaryOp::In | BinaryOp::NotIn => self.parse_values()?,
            _ => vec![self.parse_exact_value()?],
        };
        new_requirement(key, operator, values)
    }

    /// Reads `[!]KEY`; infers `Exists`/`DoesNotExist` when no operator follows.
    fn parse_key_and_infer_operator(&mut self) -> Result<(&'a str, Option<Test>), String> {
        let (mut token, mut literal) = self.consume(Context::Values);
        let negated = token == Token::DoesNotExist;
        if negated {
            (token, literal) = self.consume(Context::Values);
        }
        if token != Token::Identifier {
            return Err(format!("found '{literal}', expected: identifier"));
        }
        let errors = qualified_name_errors(literal);
        if !errors.is_empty() {
            return Err(invalid_value("<nil>", literal, &errors));
        }
        let (next, _) = self.lookahead(Context::Values);
        let unary = if negated {
            // `!key` stands alone even when junk follows; the caller reports the junk.
            Some(Test::DoesNotExist)
        } else if next == Token::EndOfString || next == Token::Comma {
            Some(Test::Exists)
        } else {
            None
        };
        Ok((literal, unary))
    }

    fn parse_operator(&mut self) -> Result<BinaryOp, String> {
        let (token, literal) = self.consume(Context::KeyAndOperator);
        Ok(match token {
            Token::In => BinaryOp::In,
            Token::NotIn => BinaryOp::NotIn,
            Token::Equals | Token::DoubleEquals => BinaryOp::Equals,
            Token::NotEquals => BinaryOp::NotEquals,
            Token::GreaterThan => BinaryOp::GreaterThan,
            Token::LessThan => BinaryOp::LessThan,
            _ => {
                return Err(format!(
                    "found '{literal}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            }
        })
    }

    /// Parses `(v1,v2,...)`; empty members (`(a,,b)`, `()`) stand for the empty value.
    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let (token, literal) = self.consume(Context::Values);
        if token != Token::OpenPar {
            return Err(format!("found '{literal}' expected: '('"));
        }
        let (token, literal) = self.lookahead(Context::Values);
        match token {
            Token::Identifier | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                // parse_identifiers_list only returns in front of the closing parenthesis.
                self.consume(Context::Values);
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(vec![String::new()])
            }
            _ => Err(format!(
                "found '{literal}', expected: ',', ')' or identifier"
            )),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, String> {
        let mut values = Vec::new();
        loop {
            let (token, literal) = self.consume(Context::Values);
            match token {
                Token::Identifier => {
                    values.push(literal.to_owned());
                    let (next, literal) = self.lookahead(Context::Values);
                    match next {
                        Token::Comma => {}
                        Token::ClosedPar => return Ok(values),
                        _ => return Err(format!("found '{literal}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.push(String::new()); // "(,"
                    }
                    match self.lookahead(Context::Values).0 {
                        Token::ClosedPar => {
                            values.push(String::new()); // ",)"
                            return Ok(values);
                        }
                        Token::Comma => {
                            self.consume(Context::Values);
                            values.push(String::new()); // ",,"
                        }
                        _ => {}
                    }
                }
                _ => return Err(format!("found '{literal}', expected: ',', or identifier")),
            }
        }
    }

    /// The value after `=`, `==`, `!=`, `>` or `<`; nothing at all means the empty value.
    fn parse_exact_value(&mut self) -> Result<String, String> {
        let (next, _) = self.lookahead(Context::Values);
        if next == Token::EndOfString || next == Token::Comma {
            return Ok(String::new());
        }
        match self.consume(Context::Values) {
            (Token::Identifier, literal) => Ok(literal.to_owned()),
            (_, literal) => Err(format!("found '{literal}', expected: identifier")),
        }
    }
}

/// Validates the values (`NewRequirement`): they are a sorted set, and the error paths index
/// into that sorted order as apimachinery's do.
fn new_requirement(
    key: &str,
    operator: BinaryOp,
    mut values: Vec<String>,
) -> Result<Requirement, String> {
    values.sort();
    values.dedup();
    let mut errors = Vec::new();
    let mut bound = 0;
    if matches!(operator, BinaryOp::GreaterThan | BinaryOp::LessThan) {
        for (i, value) in values.iter().enumerate() {
            match value.parse::<i64>() {
                Ok(parsed) => bound = parsed,
                Err(_) => errors.push(invalid_value(
                    &format!("values[{i}]"),
                    value,
                    &["for 'Gt', 'Lt' operators, the value must be an integer".to_owned()],
                )),
            }
        }
    }
    for (i, value) in values.iter().enumerate() {
        let value_errors = label_value_errors(value);
        if !value_errors.is_empty() {
            errors.push(invalid_value(
                &format!("values[{i}][{key}]"),
                value,
                &value_errors,
            ));
        }
    }
    aggregate(errors)?;
    let test = match operator {
        BinaryOp::In | BinaryOp::Equals => Test::In(values.into_iter().collect()),
        BinaryOp::NotIn | BinaryOp::NotEquals => Test::NotIn(values.into_iter().collect()),
        BinaryOp::GreaterThan => Test::GreaterThan(bound),
        BinaryOp::LessThan => Test::LessThan(bound),
    };
    Ok(Requirement {
        key: key.to_owned(),
        test,
    })
}

// ---------------------------------------------------------------------------------------------
// Validation messages (k8s.io/apimachinery/pkg/util/validation and .../field)

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR: &str = "a DNS-1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const NAME_MAX_LENGTH: usize = 63;
const SUBDOMAIN_MAX_LENGTH: usize = 253;

/// `validation.RegexError`, including its quirky double spaces before "or".
fn regex_error(message: &str, format: &str, examples: &[&str]) -> String {
    let examples: String = examples
        .iter()
        .enumerate()
        .fold(String::new(), |acc, (i, e)| {
            let or = if i > 0 { " or " } else { "" };
            format!("{acc}{or}'{e}', ")
        });
    format!("{message} (e.g. {examples}regex used for validation is '{format}')")
}

fn max_length_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, which label names and non-empty values must be.
fn is_qualified_token(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(|label| {
        let bytes = label.as_bytes();
        match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => {
                first.is_ascii_alphanumeric()
                    && last.is_ascii_alphanumeric()
                    && bytes
                        .iter()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            }
            _ => false,
        }
    })
}

/// `validation.IsQualifiedName`: an optional DNS-subdomain prefix and `/`, then a name.
fn qualified_name_errors(value: &str) -> Vec<String> {
    let example_names = ["MyName", "my.name", "123-abc"];
    let parts: Vec<&str> = value.split('/').collect();
    let mut errors = Vec::new();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_owned());
            } else {
                if prefix.len() > SUBDOMAIN_MAX_LENGTH {
                    errors.push(format!(
                        "prefix part {}",
                        max_length_error(SUBDOMAIN_MAX_LENGTH)
                    ));
                }
                if !is_dns1123_subdomain(prefix) {
                    let detail = regex_error(
                        DNS1123_SUBDOMAIN_ERR,
                        DNS1123_SUBDOMAIN_FMT,
                        &["example.com"],
                    );
                    errors.push(format!("prefix part {detail}"));
                }
            }
            *name
        }
        _ => {
            let detail = regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &example_names);
            return vec![format!(
                "a qualified name {detail} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )];
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_owned());
    } else if name.len() > NAME_MAX_LENGTH {
        errors.push(format!("name part {}", max_length_error(NAME_MAX_LENGTH)));
    }
    if !is_qualified_token(name) {
        let detail = regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &example_names);
        errors.push(format!("name part {detail}"));
    }
    errors
}

/// `validation.IsValidLabelValue`.
fn label_value_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > NAME_MAX_LENGTH {
        errors.push(max_length_error(NAME_MAX_LENGTH));
    }
    if !value.is_empty() && !is_qualified_token(value) {
        errors.push(regex_error(
            LABEL_VALUE_ERR,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errors
}

/// `field.Invalid(path, value, detail).Error()`.
fn invalid_value(path: &str, value: &str, details: &[String]) -> String {
    format!(
        "{path}: Invalid value: {}: {}",
        go_quote(value),
        details.join("; ")
    )
}

/// `utilerrors.NewAggregate(...).Error()`: one message as is, several deduplicated in brackets.
fn aggregate(errors: Vec<String>) -> Result<(), String> {
    let mut unique: Vec<String> = Vec::new();
    for error in errors {
        if !unique.contains(&error) {
            unique.push(error);
        }
    }
    match unique.len() {
        0 => Ok(()),
        1 => Err(unique.remove(0)),
        _ => Err(format!("[{}]", unique.join(", "))),
    }
}

/// Go's `%q` (`strconv.Quote`), as validation messages quote values.
pub fn go_quote(s: &str) -> String {
    let mut quoted = String::with_capacity(s.len() + 2);
    quoted.push('"');
    for c in s.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\u{7}' => quoted.push_str("\\a"),
            '\u{8}' => quoted.push_str("\\b"),
            '\u{c}' => quoted.push_str("\\f"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '\u{b}' => quoted.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                quoted.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => quoted.push_str(&format!("\\u{:04x}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

// ---------------------------------------------------------------------------------------------
// Field selectors

/// A parsed field selector: `path=value`, `path==value`, `path!=value`, comma-separated.
/// Values may escape `\`, `,` and `=` with a backslash (`fields.EscapeValue`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    value: String,
    /// `=`/`==` (true) or `!=` (false).
    equal: bool,
}

impl FieldSelector {
    /// Parses the query-parameter syntax; the error is the API server's message text. Like the
    /// API server, whitespace is not trimmed: it is part of the path or the value.
    pub fn parse(text: &str) -> Result<FieldSelector, String> {
        let mut parts = split_terms(text);
        // apimachinery sorts the terms first, which decides which bad term gets reported.
        parts.sort_unstable();
        let mut terms = Vec::new();
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            let (field, operator, raw_value) = split_term(part)
                .ok_or_else(|| format!("invalid selector: '{text}'; can't understand '{part}'"))?;
            terms.push(FieldTerm {
                field: field.to_owned(),
                value: unescape_value(raw_value)?,
                equal: operator != "!=",
            });
        }
        Ok(FieldSelector { terms })
    }

    /// The field paths used (`metadata.name`, `spec.nodeName`…), for the caller to check they
    /// are supported for the resource.
    pub fn fields(&self) -> Vec<&str> {
        self.terms.iter().map(|t| t.field.as_str()).collect()
    }

    /// The value `field` must equal for an object to be selected, if a term requires one
    /// (`fields.Selector.RequiresExactMatch`): `metadata.name=p` names the object `p`.
    pub fn exact_match(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.equal && t.field == field)
            .map(|t| t.value.as_str())
    }

    /// Whether `object` is selected: each path is read from the object's JSON (a missing field
    /// reads as the empty string, as the API server's field sets do).
    pub fn matches(&self, object: &Value) -> bool {
        self.matches_with(object, field_value)
    }

    /// Whether `object` is selected when `value_of(object, path)` gives a field's value (for
    /// fields the API server computes rather than reads, like a core Event's `source`).
    pub fn matches_with(&self, object: &Value, value_of: impl Fn(&Value, &str) -> String) -> bool {
        self.terms
            .iter()
            .all(|t| (value_of(object, &t.field) == t.value) == t.equal)
    }

    /// The same selector on renamed fields (a version's field labels converted to the stored
    /// form's, as `AddFieldLabelConversionFunc` does).
    pub fn renamed(self, rename: impl Fn(&str) -> String) -> FieldSelector {
        FieldSelector {
            terms: self
                .terms
                .into_iter()
                .map(|t| FieldTerm {
                    field: rename(&t.field),
                    ..t
                })
                .collect(),
        }
    }
}

/// Splits on commas that are not backslash-escaped; escapes stay in the terms.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in selector.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// Splits a term at the first operator; `!=` and `==` win over `=` at the same position.
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    term.char_indices().find_map(|(i, _)| {
        ["!=", "==", "="]
            .into_iter()
            .find(|op| term[i..].starts_with(op))
            .map(|op| (&term[..i], op, &term[i + op.len()..]))
    })
}

/// `fields.UnescapeValue`.
fn unescape_value(raw: &str) -> Result<String, String> {
    let mut value = String::with_capacity(raw.len());
    let mut escaped = false;
    for c in raw.chars() {
        if escaped {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(format!(
                    "invalid field selector: invalid escape sequence: \\{c}"
                ));
            }
            value.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' || c == '=' {
            // Go prints the rune with %v, i.e. as its code point number.
            return Err(format!(
                "invalid field selector: unescaped character in value: {}",
                c as u32
            ));
        } else {
            value.push(c);
        }
    }
    if escaped {
        return Err("invalid field selector: invalid escape sequence: \\".to_owned());
    }
    Ok(value)
}

/// The string form of the value at a dotted path; missing and null read as "".
pub fn field_value(object: &Value, path: &str) -> String {
    let value = path.split('.').try_fold(object, |v, key| v.get(key));
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn selects(selector: &str, pairs: &[(&str, &str)]) -> bool {
        LabelSelector::parse(selector)
            .unwrap()
            .matches(&labels(pairs))
    }

    fn label_error(selector: &str) -> String {
        LabelSelector::parse(selector).unwrap_err()
    }

    #[test]
    fn empty_label_selector_selects_everything() {
        assert!(selects("", &[]));
        assert!(selects("  ", &[("a", "b")]));
    }

    #[test]
    fn equality_operators() {
        for selector in ["app=web", "app==web", " app = web "] {
            assert!(selects(selector, &[("app", "web")]), "{selector}");
            assert!(!selects(selector, &[("app", "db")]), "{selector}");
            assert!(!selects(selector, &[]), "{selector}");
        }
        assert_eq!(LabelSelector::parse("a=b"), LabelSelector::parse("a==b"));
    }

    #[test]
    fn not_equals_also_matches_a_missing_key() {
        assert!(selects("app!=web", &[("app", "db")]));
        assert!(selects("app!=web", &[]));
        assert!(!selects("app!=web", &[("app", "web")]));
    }

    #[test]
    fn set_operators() {
        assert!(selects("tier in (web, db)", &[("tier", "db")]));
        assert!(!selects("tier in (web,db)", &[("tier", "cache")]));
        assert!(!selects("tier in (web,db)", &[]));
        assert!(selects("tier notin (web)", &[("tier", "db")]));
        assert!(selects("tier notin (web)", &[]));
        assert!(!selects("tier notin (web,db)", &[("tier", "db")]));
    }

    #[test]
    fn empty_values_in_sets() {
        assert!(selects("a in ()", &[("a", "")]));
        assert!(selects("a in (,x)", &[("a", "")]));
        assert!(selects("a in (x,,y)", &[("a", "")]));
        assert!(selects("a in (x,)", &[("a", "")]));
        assert!(!selects("a in (x,y)", &[("a", "")]));
        assert!(selects("a=", &[("a", "")]));
        assert!(selects("a=,b", &[("a", ""), ("b", "1")]));
    }

    #[test]
    fn keywords_are_values_in_sets() {
        assert!(selects("x in (in,notin)", &[("x", "notin")]));
        assert!(selects("in", &[("in", "1")]));
    }

    #[test]
    fn exists_and_does_not_exist() {
        assert!(selects("app", &[("app", "")]));
        assert!(!selects("app", &[]));
        assert!(selects("!app", &[("other", "x")]));
        assert!(!selects("!app", &[("app", "x")]));
        assert!(selects(" ! app ", &[]));
    }

    #[test]
    fn integer_comparisons() {
        assert!(selects("n>3", &[("n", "4")]));
        assert!(!selects("n>3", &[("n", "3")]));
        assert!(!selects("n>3", &[("n", "x")]));
        assert!(!selects("n>3", &[]));
        assert!(selects("n<3", &[("n", "2")]));
    }

    #[test]
    fn requirements_are_anded() {
        let selector = "app=web,tier in (a,b),!legacy,env";
        assert!(selects(
            selector,
            &[("app", "web"), ("tier", "b"), ("env", "")]
        ));
        assert!(!selects(
            selector,
            &[("app", "web"), ("tier", "b"), ("env", ""), ("legacy", "1")]
        ));
        assert!(!selects(selector, &[("app", "web"), ("tier", "b")]));
    }

    #[test]
    fn prefixed_keys() {
        assert!(selects(
            "app.kubernetes.io/name=x",
            &[("app.kubernetes.io/name", "x")]
        ));
    }

    #[test]
    fn syntax_errors_use_apimachinery_messages() {
        assert_eq!(
            label_error("a=b,"),
            "found '', expected: identifier after ','"
        );
        assert_eq!(
            label_error("a=b c"),
            "found 'c', expected: ',' or 'end of string'"
        );
        assert_eq!(
            label_error("=a"),
            "found '=', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            label_error("a b"),
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            label_error("a in b"),
            "unable to parse requirement: found 'b' expected: '('"
        );
        assert_eq!(
            label_error("a in (b"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert_eq!(
            label_error("a in (=)"),
            "unable to parse requirement: found '=', expected: ',', ')' or identifier"
        );
        assert_eq!(
            label_error("a=("),
            "unable to parse requirement: found '(', expected: identifier"
        );
        assert_eq!(
            label_error("!"),
            "unable to parse requirement: found '', expected: identifier"
        );
        assert_eq!(
            label_error("!a=b"),
            "found '=', expected: ',' or 'end of string'"
        );
    }

    #[test]
    fn invalid_keys_are_rejected() {
        assert_eq!(
            label_error("a/b/c"),
            "unable to parse requirement: <nil>: Invalid value: \"a/b/c\": a qualified name must consist of \
             alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character \
             (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is \
             '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' \
             (e.g. 'example.com/MyName')"
        );
        assert!(label_error("-a").contains("Invalid value: \"-a\": name part must consist of"));
        assert!(
            label_error("Ex.com/a").contains("prefix part a DNS-1123 subdomain must consist of")
        );
        assert!(label_error("/a").contains("prefix part must be non-empty"));
        let long = "k".repeat(64);
        assert!(label_error(&long).contains("name part must be no more than 63 characters"));
    }

    #[test]
    fn invalid_values_are_rejected() {
        assert_eq!(
            label_error("app=-x"),
            "unable to parse requirement: values[0][app]: Invalid value: \"-x\": a valid label must be an \
             empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end \
             with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for \
             validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
        // Indices follow the sorted value set.
        assert!(label_error("app in (z,_a)").contains("values[0][app]: Invalid value: \"_a\""));
        let long = "v".repeat(64);
        assert!(label_error(&format!("a={long}")).contains("must be no more than 63 characters"));
        assert!(label_error("a=\u{e9}").contains("Invalid value: \"\u{e9}\""));
    }

    #[test]
    fn comparisons_need_integers() {
        assert_eq!(
            label_error("n>x"),
            "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the \
             value must be an integer"
        );
        // Several errors are aggregated in brackets.
        let both = label_error("n<x.");
        assert!(
            both.starts_with("unable to parse requirement: [values[0]: "),
            "{both}"
        );
        assert!(
            both.contains(", values[0][n]: Invalid value: \"x.\""),
            "{both}"
        );
    }

    #[test]
    fn go_quoting_escapes_controls() {
        assert_eq!(
            go_quote("a\"b\\c\n\u{1b}\u{85}"),
            "\"a\\\"b\\\\c\\n\\x1b\\u0085\""
        );
    }

    fn field(selector: &str) -> FieldSelector {
        FieldSelector::parse(selector).unwrap()
    }

    #[test]
    fn field_equality_and_inequality() {
        let pod = json!({"metadata": {"name": "p1"}, "status": {"phase": "Running"}});
        assert!(field("metadata.name=p1").matches(&pod));
        assert!(field("metadata.name==p1").matches(&pod));
        assert!(!field("metadata.name=p2").matches(&pod));
        assert!(field("status.phase!=Pending").matches(&pod));
        assert!(!field("status.phase!=Running").matches(&pod));
        assert!(field("metadata.name=p1,status.phase=Running").matches(&pod));
        assert!(!field("metadata.name=p1,status.phase=Failed").matches(&pod));
    }

    #[test]
    fn empty_field_selector_selects_everything() {
        let selector = field("");
        assert!(selector.fields().is_empty());
        assert!(selector.matches(&json!({})));
        assert!(field(",").fields().is_empty());
    }

    #[test]
    fn missing_and_null_fields_read_as_empty() {
        let pod = json!({"spec": {"nodeName": null}});
        assert!(field("spec.nodeName=").matches(&pod));
        assert!(field("spec.schedulerName=").matches(&pod));
        assert!(field("spec.nodeName!=n1").matches(&pod));
        assert!(!field("spec.nodeName=n1").matches(&pod));
    }

    #[test]
    fn scalars_compare_by_string_form() {
        let object = json!({"count": 3, "flag": true, "ratio": 1.5});
        assert!(field("count=3,flag=true,ratio=1.5").matches(&object));
    }

    #[test]
    fn escaped_values() {
        let event = json!({"message": "a,b=c\\d"});
        let selector = field(r"message=a\,b\=c\\d");
        assert_eq!(selector.fields(), vec!["message"]);
        assert!(selector.matches(&event));
    }

    #[test]
    fn fields_lists_paths_in_sorted_order() {
        let selector = field("status.phase!=Failed,involvedObject.kind=Pod");
        assert_eq!(
            selector.fields(),
            vec!["involvedObject.kind", "status.phase"]
        );
    }

    #[test]
    fn selector_objects_as_text() {
        let selector = json!({
            "matchLabels": {"tier": "db", "app": "pfs"},
            "matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["b", "a"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "role", "operator": "Exists"},
            ],
        });
        let text = label_selector_text(&selector);
        assert_eq!(
            text,
            "app=pfs,!canary,env notin (dev),role,tier=db,zone in (a,b)"
        );
        let parsed = LabelSelector::parse(&text).unwrap();
        assert!(parsed.matches(&labels(&[
            ("app", "pfs"),
            ("tier", "db"),
            ("zone", "a"),
            ("role", "x")
        ])));
        assert!(!parsed.matches(&labels(&[
            ("app", "pfs"),
            ("tier", "db"),
            ("zone", "c"),
            ("role", "x")
        ])));
        assert_eq!(label_selector_text(&json!({})), "");
    }

    #[test]
    fn exact_matches_name_objects() {
        let selector = FieldSelector::parse("spec.nodeName=n1,metadata.name==p").unwrap();
        assert_eq!(selector.exact_match("metadata.name"), Some("p"));
        assert_eq!(selector.exact_match("status.phase"), None);
        let negated = FieldSelector::parse("metadata.name!=p").unwrap();
        assert_eq!(negated.exact_match("metadata.name"), None);
    }

    #[test]
    fn field_parse_errors() {
        assert_eq!(
            FieldSelector::parse("metadata.name").unwrap_err(),
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
        );
        assert_eq!(
            FieldSelector::parse("a=b=c").unwrap_err(),
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            FieldSelector::parse(r"a=\x").unwrap_err(),
            r"invalid field selector: invalid escape sequence: \x"
        );
        assert_eq!(
            FieldSelector::parse(r"a=b\").unwrap_err(),
            r"invalid field selector: invalid escape sequence: \"
        );
    }
}
