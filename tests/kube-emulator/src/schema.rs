//! Structural OpenAPI v3 schemas of CustomResourceDefinitions: defaulting, pruning and
//! validation (including `x-kubernetes-validations` CEL rules and transition rules), the way
//! the API server applies them on create and update. Pure code.
//!
//! # What this module owns
//!
//! The `openAPIV3Schema` of one CRD version: [`Schema::compile`] walks it once into a tree of
//! nodes (CEL rules compiled), and the tree then defaults ([`Schema::apply_defaults`]), prunes
//! ([`Schema::prune`]) and validates ([`Schema::validate`]) whole custom resources given as JSON.
//! The algorithms are ports of k8s.io/apiextensions-apiserver (`pkg/apiserver/schema/pruning`,
//! `.../defaulting`, `.../listtype`, `.../cel/validation.go`) and of the kube-openapi validator
//! it runs (`pkg/validation/validate`); messages are rendered as k8s.io/apimachinery's
//! `field.Error.ErrorBody` renders them (current upstream wording: values as JSON, `Too long:
//! may not be more than N bytes`).
//!
//! # What it must not do
//!
//! No I/O, and no knowledge of storage, HTTP, versions, conversion or status subresources.
//! It does not touch `metadata` at a resource root (the object's root, or an
//! `x-kubernetes-embedded-resource` object): the API server validates `ObjectMeta` elsewhere.
//! There `apiVersion`, `kind` and `metadata` are never pruned, defaulted or validated (CEL still
//! sees `apiVersion`, `kind`, `metadata.name` and `metadata.generateName`, as in Kubernetes).
//!
//! # CEL
//!
//! Rules are compiled with the `cel` crate in an environment of its standard library — the
//! `has`, `all`, `exists`, `exists_one`, `map` and `filter` macros, `size`, `contains`,
//! `startsWith`, `endsWith`, `matches`, `in`, conversions, timestamps, durations and optionals
//! (`a.?b`, `orValue`, `hasValue`) — plus the extended strings library Kubernetes also has
//! (`charAt`, `indexOf`, `lastIndexOf`, `lowerAscii`, `upperAscii`, `replace`, `split`, `join`,
//! `substring`, `trim`, `format`, `strings.quote`, `reverse`). `self` is the value at the node
//! carrying the rule (objects are maps holding only their present, declared properties, with
//! Kubernetes' escaping of property names such as `x-y` → `x__dash__y`; integers are `int`,
//! `number`s `double`), `oldSelf` the same node of the stored object. Rules that use `oldSelf`
//! run only when that node exists in both objects (list items are paired only in
//! `x-kubernetes-list-type: map` lists, by their keys), unless `optionalOldSelf` is set, when
//! `oldSelf` is an optional. `message`, `messageExpression`, `reason` and `fieldPath` are honoured.
//!
//! Not supported: Kubernetes' own CEL libraries (lists: `isSorted`, `sum`, `min`, `max`, list
//! `indexOf`; regex `find`/`findAll`; URL, IP, CIDR, quantity, semver, format, authorizer), sets
//! and two-variable comprehensions. Such a call fails when evaluated, with an `Undeclared
//! reference` cause.
//!
//! # Known differences from the API server
//!
//! - Rules are parsed, not type-checked: a rule naming a field the schema lacks is accepted by
//!   [`Schema::compile`] and fails when evaluated. There is no CEL cost budget.
//! - `date-time`/`duration` strings stay strings in CEL, and list-type `set`/`map` lists compare
//!   in order.
//! - `allOf`, `anyOf`, `oneOf`, `not`, `uniqueItems` and `x-kubernetes-map-type` change nothing
//!   here; `int32`/`int64` formats do not bound integers (the API server does not either).
//! - No validation ratcheting; the `metadata` of embedded resources is kept as it is.
//! - `x-kubernetes-int-or-string` values that are neither integers nor strings are rejected as
//!   if `anyOf: [integer, string]` were declared.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, LazyLock};

use cel::common::types::CelOptional;
use cel::common::value::Val;
use cel::{Context, Env, ExecutionError, Program, Value as CelValue, extensions};
use regex::Regex;
use serde_json::{Map, Number, Value};

/// One reason a value is invalid, as the API server reports it in a 422 Status's causes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`,
    /// `FieldValueTypeInvalid`, `FieldValueTooLong`, `FieldValueTooMany`, `FieldValueForbidden`,
    /// `FieldValueDuplicate`.
    pub reason: String,
    /// E.g. `Invalid value: 0: spec.storeId in body should be greater than or equal to 1`.
    pub message: String,
    /// Dotted path with indices: `spec.trays[1].device`.
    pub field: String,
}

/// A compiled `openAPIV3Schema` of one CRD version.
#[derive(Clone, Debug)]
pub struct Schema {
    root: Arc<Node>,
    cel: CelEnvironment,
}

impl Schema {
    /// Compiles a schema; CEL rules that do not compile are an error (the CRD is rejected).
    ///
    /// The causes' fields are schema paths relative to `openAPIV3Schema` (empty for the schema
    /// itself), in the API server's form (`properties[spec].x-kubernetes-validations[0].rule`),
    /// for the caller to prefix with the version's path. Bad regular expressions, unknown
    /// types, list types or rule reasons, and `fieldPath`s that name no field are errors too.
    pub fn compile(open_api_v3_schema: &Value) -> Result<Schema, Vec<Cause>> {
        let env = cel_environment().map_err(|error| {
            vec![Cause {
                reason: "InternalError".to_owned(),
                message: format!("Internal error: CEL environment: {error}"),
                field: String::new(),
            }]
        })?;
        let mut compiler = Compiler {
            env: &env,
            causes: Vec::new(),
        };
        let root = compiler.node(open_api_v3_schema, "");
        if !compiler.causes.is_empty() {
            return Err(compiler.causes);
        }
        Ok(Schema {
            root: Arc::new(root),
            cel: CelEnvironment(Arc::new(env)),
        })
    }

    /// Applies `default` values in place, as the API server does before validation.
    ///
    /// A property that is absent, or null where the schema does not allow null, gets its
    /// default; then every value the schema describes is defaulted in turn, so a defaulted
    /// object gets its own defaults. Array items and `additionalProperties` values that are
    /// null where not allowed get their schema's default.
    pub fn apply_defaults(&self, object: &mut Value) {
        default_value(&self.root, object, true);
    }

    /// Removes fields the schema does not declare (unless `x-kubernetes-preserve-unknown-fields`)
    /// and returns their paths (for `fieldValidation=Strict|Warn`).
    ///
    /// Paths are those of the API server's `unknown field "…"` warnings: `spec.foo`,
    /// `spec.trays[0].foo`, `spec.settings.engine.foo`. Like the API server's decoder, it also
    /// drops, without reporting them, null values of non-nullable fields that have no default.
    pub fn prune(&self, object: &mut Value) -> Vec<String> {
        let mut pruned = Vec::new();
        prune_value(Some(&self.root), object, &Path::root(), true, &mut pruned);
        prune_nulls(&self.root, object, true);
        pruned
    }

    /// Validates `object` (after defaulting and pruning). `old` is the stored object on update,
    /// for transition rules (`oldSelf`); rules that use `oldSelf` are skipped on create.
    ///
    /// As in the API server, CEL rules are not evaluated when the OpenAPI checks found a type,
    /// required, enum, too-long or too-many error; a `<nil>` cause then says so.
    pub fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut causes = self.check(object, old);
        // The API server validates from a nil field.Path, which renders as `<nil>`.
        for cause in causes.iter_mut().filter(|cause| cause.field.is_empty()) {
            cause.field = "<nil>".to_owned();
        }
        causes
    }

    fn check(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut causes = Vec::new();
        check_value(&self.root, object, &Path::root(), true, &mut causes);
        if !self.root.has_rules {
            return causes;
        }
        if causes.iter().any(blocks_rules) {
            causes.push(rules_not_checked());
            return causes;
        }
        let mut rules = RuleCheck {
            env: &self.cel.0,
            causes,
        };
        rules.walk(&self.root, object, old, &Path::root(), true);
        rules.causes
    }
}

/// The `cel` crate's `Env` has no `Debug`, which `Schema` promises.
#[derive(Clone)]
struct CelEnvironment(Arc<Env>);

impl std::fmt::Debug for CelEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CelEnvironment")
    }
}

/// The Kubernetes CEL environment, as far as the `cel` crate provides it.
fn cel_environment() -> Result<Env, cel::DeclarationError> {
    let mut env = Env::stdlib();
    env.add_extension(extensions::strings)?;
    Ok(env)
}

// ---------------------------------------------------------------------------------------------
// Compiled schema tree
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Node {
    json_type: Option<JsonType>,
    nullable: bool,
    int_or_string: bool,
    preserve_unknown_fields: bool,
    embedded_resource: bool,
    default: Option<Value>,
    enumeration: Vec<Value>,
    properties: BTreeMap<String, Node>,
    required: Vec<String>,
    additional: Additional,
    items: Option<Box<Node>>,
    list_type: ListType,
    string: StringConstraints,
    number: NumberConstraints,
    min_items: Option<u64>,
    max_items: Option<u64>,
    min_properties: Option<u64>,
    max_properties: Option<u64>,
    rules: Vec<Rule>,
    /// Whether this node or one below carries rules, so the CEL pass skips rule-free subtrees.
    has_rules: bool,
}

impl Node {
    /// The schema's `type`, as the API server quotes it in CEL errors (empty when untyped).
    fn type_label(&self) -> &'static str {
        self.json_type.map_or("", JsonType::name)
    }

    /// The schema of a field that is not a declared property.
    fn additional_schema(&self) -> Option<&Node> {
        match &self.additional {
            Additional::Schema(schema) => Some(schema),
            Additional::Absent | Additional::Unconstrained => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JsonType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
}

impl JsonType {
    const NAMES: [&'static str; 6] = ["array", "boolean", "integer", "number", "object", "string"];

    fn parse(name: &str) -> Option<JsonType> {
        Some(match name {
            "string" => JsonType::String,
            "integer" => JsonType::Integer,
            "number" => JsonType::Number,
            "boolean" => JsonType::Boolean,
            "array" => JsonType::Array,
            "object" => JsonType::Object,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            JsonType::String => "string",
            JsonType::Integer => "integer",
            JsonType::Number => "number",
            JsonType::Boolean => "boolean",
            JsonType::Array => "array",
            JsonType::Object => "object",
        }
    }

    fn admits(self, value: &Value) -> bool {
        match self {
            JsonType::String => value.is_string(),
            JsonType::Integer => is_integral(value),
            JsonType::Number => value.is_number(),
            JsonType::Boolean => value.is_boolean(),
            JsonType::Array => value.is_array(),
            JsonType::Object => value.is_object(),
        }
    }
}

/// `additionalProperties`.
#[derive(Debug, Default)]
enum Additional {
    /// Absent, or `false` (which structural schemas forbid anyway).
    #[default]
    Absent,
    /// `true`: any key, with values the schema knows nothing about.
    Unconstrained,
    Schema(Box<Node>),
}

/// `x-kubernetes-list-type`, with the `x-kubernetes-list-map-keys` of a map list.
#[derive(Debug, Default)]
enum ListType {
    #[default]
    Atomic,
    Set,
    Map(Vec<String>),
}

#[derive(Debug, Default)]
struct StringConstraints {
    min_length: Option<u64>,
    max_length: Option<u64>,
    pattern: Option<Pattern>,
    format: Option<DeclaredFormat>,
}

#[derive(Debug)]
struct Pattern {
    source: String,
    regex: Regex,
}

#[derive(Debug)]
struct DeclaredFormat {
    kind: Format,
    /// As the schema spells it, for messages.
    declared: String,
}

#[derive(Debug, Default)]
struct NumberConstraints {
    minimum: Option<Bound>,
    maximum: Option<Bound>,
    multiple_of: Option<f64>,
}

#[derive(Clone, Copy, Debug)]
struct Bound {
    limit: f64,
    exclusive: bool,
}

/// One `x-kubernetes-validations` entry.
#[derive(Debug)]
struct Rule {
    source: String,
    program: Program,
    message: Option<String>,
    message_expression: Option<Program>,
    reason: ErrorType,
    /// `fieldPath`, resolved against the schema and rendered as a `field.Path`.
    field_path: Option<String>,
    uses_old_self: bool,
    optional_old_self: bool,
}

impl Rule {
    /// apiextensions' `ruleErrorString`.
    fn error_string(&self) -> &str {
        self.message.as_deref().unwrap_or(&self.source)
    }

    /// apiextensions' `ruleMessageOrDefault`.
    fn default_message(&self) -> String {
        match &self.message {
            Some(message) => message.clone(),
            None => format!("failed rule: {}", self.source),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Compilation
// ---------------------------------------------------------------------------------------------

struct Compiler<'e> {
    env: &'e Env,
    causes: Vec<Cause>,
}

impl Compiler<'_> {
    /// Compiles the schema at `at` (an API-server style schema path), recording its errors.
    fn node(&mut self, schema: &Value, at: &str) -> Node {
        let Some(keywords) = schema.as_object() else {
            self.causes.push(field_error(
                ErrorType::Invalid,
                at.to_owned(),
                Some(render_value(schema)),
                "must be a schema object",
            ));
            return Node::default();
        };
        let mut node = Node {
            json_type: self.json_type(keywords, at),
            nullable: self.flag(keywords, at, "nullable"),
            int_or_string: self.flag(keywords, at, "x-kubernetes-int-or-string"),
            preserve_unknown_fields: self.flag(
                keywords,
                at,
                "x-kubernetes-preserve-unknown-fields",
            ),
            embedded_resource: self.flag(keywords, at, "x-kubernetes-embedded-resource"),
            default: keywords.get("default").cloned(),
            enumeration: self.list(keywords, at, "enum").to_vec(),
            properties: self.properties(keywords, at),
            required: self.strings(keywords, at, "required"),
            additional: self.additional(keywords, at),
            items: keywords
                .get("items")
                .map(|items| Box::new(self.node(items, &schema_path(at, "items")))),
            list_type: self.list_type(keywords, at),
            string: self.string_constraints(keywords, at),
            number: self.number_constraints(keywords, at),
            min_items: self.count(keywords, at, "minItems"),
            max_items: self.count(keywords, at, "maxItems"),
            min_properties: self.count(keywords, at, "minProperties"),
            max_properties: self.count(keywords, at, "maxProperties"),
            rules: Vec::new(),
            has_rules: false,
        };
        // A rule's fieldPath is resolved against the node's compiled properties.
        node.rules = self.rules(keywords, at, &node);
        node.has_rules = !node.rules.is_empty()
            || node.properties.values().any(|property| property.has_rules)
            || node.items.as_ref().is_some_and(|items| items.has_rules)
            || node
                .additional_schema()
                .is_some_and(|schema| schema.has_rules);
        node
    }

    fn json_type(&mut self, keywords: &Map<String, Value>, at: &str) -> Option<JsonType> {
        let name = self.text(keywords, at, "type")?;
        let parsed = JsonType::parse(name);
        if parsed.is_none() {
            self.causes.push(not_supported(
                schema_path(at, "type"),
                &Value::from(name),
                &JsonType::NAMES,
            ));
        }
        parsed
    }

    fn properties(&mut self, keywords: &Map<String, Value>, at: &str) -> BTreeMap<String, Node> {
        let Some(properties) = keywords.get("properties") else {
            return BTreeMap::new();
        };
        let Some(properties) = properties.as_object() else {
            self.wrong_type(at, "properties", properties, "an object");
            return BTreeMap::new();
        };
        properties
            .iter()
            .map(|(name, schema)| {
                let child = self.node(schema, &schema_path(at, &format!("properties[{name}]")));
                (name.clone(), child)
            })
            .collect()
    }

    fn additional(&mut self, keywords: &Map<String, Value>, at: &str) -> Additional {
        match keywords.get("additionalProperties") {
            None | Some(Value::Bool(false)) => Additional::Absent,
            Some(Value::Bool(true)) => Additional::Unconstrained,
            Some(schema @ Value::Object(_)) => Additional::Schema(Box::new(
                self.node(schema, &schema_path(at, "additionalProperties")),
            )),
            Some(other) => {
                self.wrong_type(at, "additionalProperties", other, "a boolean or a schema");
                Additional::Absent
            }
        }
    }

    fn list_type(&mut self, keywords: &Map<String, Value>, at: &str) -> ListType {
        match self.text(keywords, at, "x-kubernetes-list-type") {
            None | Some("atomic") => ListType::Atomic,
            Some("set") => ListType::Set,
            Some("map") => {
                let keys = self.strings(keywords, at, "x-kubernetes-list-map-keys");
                if keys.is_empty() {
                    self.causes.push(field_error(
                        ErrorType::Required,
                        schema_path(at, "x-kubernetes-list-map-keys"),
                        None,
                        "must not be empty if x-kubernetes-list-type is map",
                    ));
                }
                ListType::Map(keys)
            }
            Some(other) => {
                self.causes.push(not_supported(
                    schema_path(at, "x-kubernetes-list-type"),
                    &Value::from(other),
                    &["atomic", "map", "set"],
                ));
                ListType::Atomic
            }
        }
    }

    fn string_constraints(&mut self, keywords: &Map<String, Value>, at: &str) -> StringConstraints {
        StringConstraints {
            min_length: self.count(keywords, at, "minLength"),
            max_length: self.count(keywords, at, "maxLength"),
            pattern: self.pattern(keywords, at),
            format: self.text(keywords, at, "format").and_then(|declared| {
                Format::parse(declared).map(|kind| DeclaredFormat {
                    kind,
                    declared: declared.to_owned(),
                })
            }),
        }
    }

    fn pattern(&mut self, keywords: &Map<String, Value>, at: &str) -> Option<Pattern> {
        let source = self.text(keywords, at, "pattern")?;
        match Regex::new(source) {
            Ok(regex) => Some(Pattern {
                source: source.to_owned(),
                regex,
            }),
            Err(error) => {
                // apiextensions' CRD validation wording.
                self.causes.push(field_error(
                    ErrorType::Invalid,
                    schema_path(at, "pattern"),
                    Some(go_quote(source)),
                    &format!("must be a valid regular expression, but isn't: {error}"),
                ));
                None
            }
        }
    }

    fn number_constraints(&mut self, keywords: &Map<String, Value>, at: &str) -> NumberConstraints {
        let exclusive_minimum = self.flag(keywords, at, "exclusiveMinimum");
        let exclusive_maximum = self.flag(keywords, at, "exclusiveMaximum");
        NumberConstraints {
            minimum: self.number(keywords, at, "minimum").map(|limit| Bound {
                limit,
                exclusive: exclusive_minimum,
            }),
            maximum: self.number(keywords, at, "maximum").map(|limit| Bound {
                limit,
                exclusive: exclusive_maximum,
            }),
            multiple_of: self.number(keywords, at, "multipleOf"),
        }
    }

    fn rules(&mut self, keywords: &Map<String, Value>, at: &str, node: &Node) -> Vec<Rule> {
        self.list(keywords, at, "x-kubernetes-validations")
            .iter()
            .enumerate()
            .filter_map(|(index, raw)| {
                self.rule(
                    raw,
                    &schema_path(at, &format!("x-kubernetes-validations[{index}]")),
                    node,
                )
            })
            .collect()
    }

    fn rule(&mut self, raw: &Value, at: &str, node: &Node) -> Option<Rule> {
        let Some(fields) = raw.as_object() else {
            self.causes.push(field_error(
                ErrorType::Invalid,
                at.to_owned(),
                Some(render_value(raw)),
                "must be an object",
            ));
            return None;
        };
        let causes_before = self.causes.len();
        let source = self
            .text(fields, at, "rule")
            .map(str::trim)
            .unwrap_or_default();
        if source.is_empty() {
            self.causes.push(field_error(
                ErrorType::Required,
                schema_path(at, "rule"),
                None,
                "",
            ));
        }
        let program = self.program(source, schema_path(at, "rule"), "compilation failed");
        let message_expression = self
            .text(fields, at, "messageExpression")
            .filter(|expression| !expression.trim().is_empty())
            .and_then(|expression| {
                self.program(
                    expression,
                    schema_path(at, "messageExpression"),
                    "messageExpression compilation failed",
                )
            });
        let message = self
            .text(fields, at, "message")
            .map(str::trim)
            .filter(|message| !message.is_empty())
            .map(str::to_owned);
        let reason = self.reason(fields, at);
        let field_path = self.field_path(fields, at, node);
        let optional_old_self = self.flag(fields, at, "optionalOldSelf");
        if self.causes.len() > causes_before {
            return None;
        }
        let program = program?;
        Some(Rule {
            uses_old_self: program.references().has_variable("oldSelf"),
            source: source.to_owned(),
            program,
            message,
            message_expression,
            reason,
            field_path,
            optional_old_self,
        })
    }

    fn program(&mut self, source: &str, at: String, failure: &str) -> Option<Program> {
        if source.is_empty() {
            return None;
        }
        match self.env.compile(source) {
            Ok(program) => Some(program),
            Err(error) => {
                self.causes.push(field_error(
                    ErrorType::Invalid,
                    at,
                    Some(go_quote(source)),
                    &format!("{failure}: {error}"),
                ));
                None
            }
        }
    }

    fn reason(&mut self, fields: &Map<String, Value>, at: &str) -> ErrorType {
        match self.text(fields, at, "reason") {
            None | Some("FieldValueInvalid") => ErrorType::Invalid,
            Some("FieldValueForbidden") => ErrorType::Forbidden,
            Some("FieldValueRequired") => ErrorType::Required,
            Some("FieldValueDuplicate") => ErrorType::Duplicate,
            Some(other) => {
                self.causes.push(not_supported(
                    schema_path(at, "reason"),
                    &Value::from(other),
                    &[
                        "FieldValueDuplicate",
                        "FieldValueForbidden",
                        "FieldValueInvalid",
                        "FieldValueRequired",
                    ],
                ));
                ErrorType::Invalid
            }
        }
    }

    fn field_path(&mut self, fields: &Map<String, Value>, at: &str, node: &Node) -> Option<String> {
        let declared = self
            .text(fields, at, "fieldPath")
            .filter(|path| !path.is_empty())?;
        match resolve_field_path(node, declared) {
            Ok(resolved) => Some(resolved),
            Err(error) => {
                self.causes.push(field_error(
                    ErrorType::Invalid,
                    schema_path(at, "fieldPath"),
                    Some(go_quote(declared)),
                    &error,
                ));
                None
            }
        }
    }

    fn flag(&mut self, keywords: &Map<String, Value>, at: &str, key: &str) -> bool {
        match keywords.get(key) {
            None => false,
            Some(Value::Bool(flag)) => *flag,
            Some(other) => {
                self.wrong_type(at, key, other, "a boolean");
                false
            }
        }
    }

    fn count(&mut self, keywords: &Map<String, Value>, at: &str, key: &str) -> Option<u64> {
        let value = keywords.get(key)?;
        let count = value.as_u64();
        if count.is_none() {
            self.wrong_type(at, key, value, "a non-negative integer");
        }
        count
    }

    fn number(&mut self, keywords: &Map<String, Value>, at: &str, key: &str) -> Option<f64> {
        let value = keywords.get(key)?;
        let number = value.as_f64();
        if number.is_none() {
            self.wrong_type(at, key, value, "a number");
        }
        number
    }

    fn text<'k>(
        &mut self,
        keywords: &'k Map<String, Value>,
        at: &str,
        key: &str,
    ) -> Option<&'k str> {
        let value = keywords.get(key)?;
        let text = value.as_str();
        if text.is_none() {
            self.wrong_type(at, key, value, "a string");
        }
        text
    }

    fn list<'k>(&mut self, keywords: &'k Map<String, Value>, at: &str, key: &str) -> &'k [Value] {
        match keywords.get(key) {
            None => &[],
            Some(Value::Array(values)) => values,
            Some(other) => {
                self.wrong_type(at, key, other, "an array");
                &[]
            }
        }
    }

    fn strings(&mut self, keywords: &Map<String, Value>, at: &str, key: &str) -> Vec<String> {
        let values = self.list(keywords, at, key);
        let strings: Vec<String> = values
            .iter()
            .filter_map(|value| value.as_str().map(str::to_owned))
            .collect();
        if strings.len() != values.len() {
            self.wrong_type(at, key, &Value::from(values), "an array of strings");
        }
        strings
    }

    fn wrong_type(&mut self, at: &str, key: &str, value: &Value, expected: &str) {
        self.causes.push(field_error(
            ErrorType::Invalid,
            schema_path(at, key),
            Some(render_value(value)),
            &format!("must be {expected}"),
        ));
    }
}

/// `at` extended by `suffix` (`properties[spec]`, `items`, `pattern`, …); `at` is empty at the
/// schema's root.
fn schema_path(at: &str, suffix: &str) -> String {
    if at.is_empty() {
        suffix.to_owned()
    } else {
        format!("{at}.{suffix}")
    }
}

/// Resolves a rule's `fieldPath` (`.a.b`, `.a['b.c']`, `.map['key']`) against the node carrying
/// the rule, as apiextensions' `ValidFieldPath` does, into `field.Path` form (`a.b`, `map[key]`).
fn resolve_field_path(node: &Node, declared: &str) -> Result<String, String> {
    let mut rest = declared;
    let mut current = node;
    let mut resolved = String::new();
    while !rest.is_empty() {
        let (name, tail) = if let Some(quoted) = rest.strip_prefix("['") {
            let end = quoted
                .find("']")
                .ok_or_else(|| "unexpected end of JSON path".to_owned())?;
            (&quoted[..end], &quoted[end + 2..])
        } else if let Some(dotted) = rest.strip_prefix('.') {
            let end = dotted.find(['.', '[']).unwrap_or(dotted.len());
            (&dotted[..end], &dotted[end..])
        } else {
            return Err(format!("expected [ or . but got: {rest}"));
        };
        if name.is_empty() {
            return Err("unexpected end of JSON path".to_owned());
        }
        current = if !current.properties.is_empty() {
            let child = current
                .properties
                .get(name)
                .ok_or_else(|| "does not refer to a valid field".to_owned())?;
            if !resolved.is_empty() {
                resolved.push('.');
            }
            resolved.push_str(name);
            child
        } else if let Some(values) = current.additional_schema() {
            resolved.push_str(&format!("[{name}]"));
            values
        } else {
            return Err("does not refer to a valid field".to_owned());
        };
        rest = tail;
    }
    Ok(resolved)
}

// ---------------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Step<'a> {
    Field(&'a str),
    Key(&'a str),
    Index(usize),
}

/// Where a value is, as a chain of borrowed steps (no allocation while walking).
#[derive(Clone, Copy)]
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    step: Option<Step<'a>>,
}

impl<'a> Path<'a> {
    fn root() -> Path<'static> {
        Path {
            parent: None,
            step: None,
        }
    }

    fn field<'b>(&'b self, name: &'b str) -> Path<'b>
    where
        'a: 'b,
    {
        self.child(Step::Field(name))
    }

    fn key<'b>(&'b self, key: &'b str) -> Path<'b>
    where
        'a: 'b,
    {
        self.child(Step::Key(key))
    }

    fn index(&self, index: usize) -> Path<'_> {
        self.child(Step::Index(index))
    }

    fn child<'b>(&'b self, step: Step<'b>) -> Path<'b>
    where
        'a: 'b,
    {
        Path {
            parent: Some(self),
            step: Some(step),
        }
    }

    /// kube-openapi's and the pruner's form: map keys as fields (`spec.settings.engine`).
    fn dotted(&self) -> String {
        self.render(false)
    }

    /// `field.Path`'s form, used by CEL and list-type errors: map keys bracketed
    /// (`spec.settings[engine]`).
    fn field_path(&self) -> String {
        self.render(true)
    }

    fn render(&self, bracket_keys: bool) -> String {
        let mut steps = Vec::new();
        let mut current = Some(self);
        while let Some(path) = current {
            steps.extend(path.step);
            current = path.parent;
        }
        let mut rendered = String::new();
        for step in steps.into_iter().rev() {
            match step {
                Step::Key(key) if bracket_keys => rendered.push_str(&format!("[{key}]")),
                Step::Field(name) | Step::Key(name) => {
                    if !rendered.is_empty() {
                        rendered.push('.');
                    }
                    rendered.push_str(name);
                }
                Step::Index(index) => rendered.push_str(&format!("[{index}]")),
            }
        }
        rendered
    }
}

// ---------------------------------------------------------------------------------------------
// Causes, rendered as apimachinery's field.Error.ErrorBody renders them
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ErrorType {
    Required,
    Forbidden,
    TooLong,
    TooMany,
    Invalid,
    TypeInvalid,
    NotSupported,
    Duplicate,
}

impl ErrorType {
    fn reason(self) -> &'static str {
        match self {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::TypeInvalid => "FieldValueTypeInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Duplicate => "FieldValueDuplicate",
        }
    }

    fn title(self) -> &'static str {
        match self {
            ErrorType::Required => "Required value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
            ErrorType::Invalid | ErrorType::TypeInvalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Duplicate => "Duplicate value",
        }
    }

    /// ErrorBody never shows the value of these.
    fn hides_value(self) -> bool {
        matches!(
            self,
            ErrorType::Required | ErrorType::Forbidden | ErrorType::TooLong
        )
    }
}

/// `value` is already rendered; `None` is apimachinery's `omitValue`.
fn field_error(kind: ErrorType, field: String, value: Option<String>, detail: &str) -> Cause {
    let mut message = kind.title().to_owned();
    if let Some(value) = value.filter(|_| !kind.hides_value()) {
        message.push_str(": ");
        message.push_str(&value);
    }
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(detail);
    }
    Cause {
        reason: kind.reason().to_owned(),
        message,
        field,
    }
}

/// `field.NotSupported`: string values listed as they are, others as JSON, each quoted.
fn not_supported<S: AsRef<str>>(field: String, value: &Value, supported: &[S]) -> Cause {
    let quoted: Vec<String> = supported.iter().map(|s| go_quote(s.as_ref())).collect();
    field_error(
        ErrorType::NotSupported,
        field,
        Some(render_value(value)),
        &format!("supported values: {}", quoted.join(", ")),
    )
}

/// kube-openapi's `InvalidType`, which apiextensions turns into `field.TypeInvalid`.
fn type_invalid(path: &Path<'_>, expected: &str, actual: &str) -> Cause {
    let name = path.dotted();
    let shown = go_quote(actual);
    let detail = format!("{name} in body must be of type {expected}: {shown}");
    field_error(ErrorType::TypeInvalid, name, Some(shown), &detail)
}

/// apiextensions' `hasBlockingErr`: errors after which CEL rules are not evaluated.
fn blocks_rules(cause: &Cause) -> bool {
    [
        ErrorType::NotSupported,
        ErrorType::Required,
        ErrorType::TooLong,
        ErrorType::TooMany,
        ErrorType::TypeInvalid,
    ]
    .iter()
    .any(|kind| kind.reason() == cause.reason)
}

/// `field.Invalid(nil, nil, …)`: a nil path renders as `<nil>`, a nil value as `null`.
fn rules_not_checked() -> Cause {
    field_error(
        ErrorType::Invalid,
        "<nil>".to_owned(),
        Some("null".to_owned()),
        "some validation rules were not checked because the object was invalid; correct the \
         existing errors to complete validation",
    )
}

/// A value as ErrorBody prints it: strings Go-quoted, numbers with `%v`, the rest as JSON.
fn render_value(value: &Value) -> String {
    match value {
        Value::String(text) => go_quote(text),
        Value::Number(number) => render_number(number),
        Value::Bool(flag) => flag.to_string(),
        Value::Null => "null".to_owned(),
        Value::Array(_) | Value::Object(_) => value.to_string(),
    }
}

/// JSON integers decode to Go `int64`s, other numbers to `float64`s.
fn render_number(number: &Number) -> String {
    if number.is_i64() || number.is_u64() {
        number.to_string()
    } else {
        number.as_f64().map_or_else(|| number.to_string(), go_float)
    }
}

/// A schema bound as kube-openapi prints it: as an integer when compared with an integer.
fn render_limit(limit: f64, value: &Number) -> String {
    if (value.is_i64() || value.is_u64()) && limit.fract() == 0.0 {
        format!("{limit:.0}")
    } else {
        go_float(limit)
    }
}

/// Go's `%v` for a `float64`: shortest digits, exponent form below 1e-4 and from 1e6 on.
fn go_float(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    let scientific = format!("{value:e}");
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return scientific;
    };
    let Ok(exponent) = exponent.parse::<i32>() else {
        return scientific;
    };
    if value != 0.0 && !(-4..6).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    } else {
        format!("{value}")
    }
}

/// Go's `strconv.Quote` (`%q`) for the characters that matter here.
fn go_quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '\u{07}' => quoted.push_str("\\a"),
            '\u{08}' => quoted.push_str("\\b"),
            '\u{0b}' => quoted.push_str("\\v"),
            '\u{0c}' => quoted.push_str("\\f"),
            c if c.is_control() && u32::from(c) < 0x80 => {
                quoted.push_str(&format!("\\x{:02x}", u32::from(c)));
            }
            c if c.is_control() => quoted.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// The JSON type kube-openapi infers from a decoded value.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// kube-openapi accepts a float that is a whole number (`3.0`) as an `integer`.
fn is_integral(value: &Value) -> bool {
    let Value::Number(number) = value else {
        return false;
    };
    number.is_i64()
        || number.is_u64()
        || number
            .as_f64()
            .is_some_and(|float| float.is_finite() && float.fract() == 0.0)
}

// ---------------------------------------------------------------------------------------------
// Defaulting and pruning
// ---------------------------------------------------------------------------------------------

/// apiextensions' `structuraldefaulting.Default`.
fn default_value(node: &Node, value: &mut Value, resource_root: bool) {
    match value {
        Value::Object(map) => {
            for (key, property) in &node.properties {
                if resource_root && key == "metadata" {
                    continue;
                }
                let Some(default) = &property.default else {
                    continue;
                };
                let needs_default = map
                    .get(key)
                    .is_none_or(|current| current.is_null() && !property.nullable);
                if needs_default {
                    map.insert(key.clone(), default.clone());
                }
            }
            for (key, child) in map.iter_mut() {
                if resource_root && key == "metadata" {
                    continue;
                }
                if let Some(property) = node.properties.get(key) {
                    default_value(property, child, property.embedded_resource);
                } else if let Some(values) = node.additional_schema() {
                    default_null(values, child);
                    default_value(values, child, values.embedded_resource);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = &node.items {
                for item in items {
                    default_null(item_schema, item);
                    default_value(item_schema, item, item_schema.embedded_resource);
                }
            }
        }
        _ => {}
    }
}

fn default_null(node: &Node, value: &mut Value) {
    if value.is_null()
        && !node.nullable
        && let Some(default) = &node.default
    {
        *value = default.clone();
    }
}

/// apiextensions' `pruning.PruneWithOptions`; `node` is `None` where the schema says nothing,
/// as under `additionalProperties: true`.
fn prune_value(
    node: Option<&Node>,
    value: &mut Value,
    path: &Path<'_>,
    resource_root: bool,
    pruned: &mut Vec<String>,
) {
    if let Some(schema) = node
        && schema.preserve_unknown_fields
    {
        prune_known(schema, value, path, resource_root, pruned);
        return;
    }
    match value {
        Value::Object(map) => {
            map.retain(|key, child| {
                if resource_root && is_meta_field(key) {
                    return true;
                }
                let child_path = path.field(key);
                match node.map(|schema| child_schema(schema, key)) {
                    Some(ChildSchema::Known(schema)) => {
                        let embedded = schema.embedded_resource;
                        prune_value(Some(schema), child, &child_path, embedded, pruned);
                        true
                    }
                    Some(ChildSchema::Unconstrained) => {
                        prune_value(None, child, &child_path, false, pruned);
                        true
                    }
                    Some(ChildSchema::Unknown) | None => {
                        pruned.push(child_path.dotted());
                        false
                    }
                }
            });
        }
        Value::Array(items) => {
            let item_schema = node.and_then(|schema| schema.items.as_deref());
            let embedded = item_schema.is_some_and(|schema| schema.embedded_resource);
            for (index, item) in items.iter_mut().enumerate() {
                prune_value(item_schema, item, &path.index(index), embedded, pruned);
            }
        }
        _ => {}
    }
}

/// apiextensions' `skipPrune`, under `x-kubernetes-preserve-unknown-fields`: unknown fields
/// stay, known ones are pruned by their own schemas.
fn prune_known(
    node: &Node,
    value: &mut Value,
    path: &Path<'_>,
    resource_root: bool,
    pruned: &mut Vec<String>,
) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if resource_root && is_meta_field(key) {
                    continue;
                }
                let child_path = path.field(key);
                match child_schema(node, key) {
                    ChildSchema::Known(schema) => {
                        let embedded = schema.embedded_resource;
                        prune_value(Some(schema), child, &child_path, embedded, pruned);
                    }
                    ChildSchema::Unconstrained => {
                        prune_value(None, child, &child_path, false, pruned);
                    }
                    ChildSchema::Unknown => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = &node.items {
                for (index, item) in items.iter_mut().enumerate() {
                    let embedded = item_schema.embedded_resource;
                    prune_known(item_schema, item, &path.index(index), embedded, pruned);
                }
            }
        }
        _ => {}
    }
}

enum ChildSchema<'n> {
    Known(&'n Node),
    Unconstrained,
    Unknown,
}

fn child_schema<'n>(node: &'n Node, key: &str) -> ChildSchema<'n> {
    if let Some(property) = node.properties.get(key) {
        return ChildSchema::Known(property);
    }
    match &node.additional {
        Additional::Schema(values) => ChildSchema::Known(values),
        Additional::Unconstrained => ChildSchema::Unconstrained,
        Additional::Absent => ChildSchema::Unknown,
    }
}

/// apiextensions' `PruneNonNullableNullsWithoutDefaults`, run right after pruning.
fn prune_nulls(node: &Node, value: &mut Value, resource_root: bool) {
    match value {
        Value::Object(map) => map.retain(|key, child| {
            if resource_root && key == "metadata" {
                return true;
            }
            let ChildSchema::Known(schema) = child_schema(node, key) else {
                return true;
            };
            if child.is_null() && !schema.nullable && schema.default.is_none() {
                return false;
            }
            prune_nulls(schema, child, schema.embedded_resource);
            true
        }),
        Value::Array(items) => {
            if let Some(item_schema) = &node.items {
                for item in items {
                    prune_nulls(item_schema, item, item_schema.embedded_resource);
                }
            }
        }
        _ => {}
    }
}

fn is_meta_field(key: &str) -> bool {
    matches!(key, "apiVersion" | "kind" | "metadata")
}

// ---------------------------------------------------------------------------------------------
// OpenAPI validation (kube-openapi's validators, apiextensions' list-type validation)
// ---------------------------------------------------------------------------------------------

fn check_value(
    node: &Node,
    value: &Value,
    path: &Path<'_>,
    resource_root: bool,
    out: &mut Vec<Cause>,
) {
    if value.is_null() {
        if let Some(expected) = node.json_type
            && !node.nullable
        {
            out.push(type_invalid(path, expected.name(), "null"));
        }
        check_enum(node, value, path, out);
        return;
    }
    if let Some(expected) = type_mismatch(node, value) {
        // Nothing below a value of the wrong type is checked.
        out.push(type_invalid(path, expected, type_name(value)));
        return;
    }
    match value {
        Value::String(text) => check_string(node, text, path, out),
        Value::Number(number) => check_number(node, number, path, out),
        Value::Array(items) => check_array(node, items, path, out),
        Value::Object(map) => check_object(node, map, path, resource_root, out),
        Value::Bool(_) | Value::Null => {}
    }
    check_enum(node, value, path, out);
}

fn type_mismatch(node: &Node, value: &Value) -> Option<&'static str> {
    if node.int_or_string {
        return (!is_integral(value) && !value.is_string()).then_some("integer,string");
    }
    node.json_type
        .filter(|expected| !expected.admits(value))
        .map(JsonType::name)
}

fn check_enum(node: &Node, value: &Value, path: &Path<'_>, out: &mut Vec<Cause>) {
    if node.enumeration.is_empty() || node.enumeration.contains(value) {
        return;
    }
    let supported: Vec<String> = node
        .enumeration
        .iter()
        .map(|allowed| match allowed {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        })
        .collect();
    out.push(not_supported(path.dotted(), value, &supported));
}

fn check_string(node: &Node, text: &str, path: &Path<'_>, out: &mut Vec<Cause>) {
    let constraints = &node.string;
    let name = path.dotted();
    // kube-openapi counts runes.
    let length = text.chars().count() as u64;
    if let Some(max) = constraints.max_length
        && length > max
    {
        let unit = if max == 1 { "byte" } else { "bytes" };
        let detail = format!("may not be more than {max} {unit}");
        out.push(field_error(ErrorType::TooLong, name.clone(), None, &detail));
    }
    if let Some(min) = constraints.min_length
        && length < min
    {
        let detail = format!("{name} in body should be at least {min} chars long");
        out.push(field_error(
            ErrorType::Invalid,
            name.clone(),
            Some(go_quote(text)),
            &detail,
        ));
    }
    if let Some(pattern) = &constraints.pattern
        && !pattern.regex.is_match(text)
    {
        let detail = format!("{name} in body should match '{}'", pattern.source);
        out.push(field_error(
            ErrorType::Invalid,
            name.clone(),
            Some(go_quote(text)),
            &detail,
        ));
    }
    if let Some(format) = &constraints.format
        && !format.kind.accepts(text)
    {
        out.push(type_invalid(path, &format.declared, text));
    }
}

fn check_number(node: &Node, number: &Number, path: &Path<'_>, out: &mut Vec<Cause>) {
    let Some(value) = number.as_f64() else {
        return;
    };
    let constraints = &node.number;
    let name = path.dotted();
    let invalid = |detail: String| {
        field_error(
            ErrorType::Invalid,
            name.clone(),
            Some(render_number(number)),
            &detail,
        )
    };
    if let Some(factor) = constraints.multiple_of
        && !is_multiple_of(value, factor)
    {
        out.push(invalid(format!(
            "{name} in body should be a multiple of {}",
            go_float(factor)
        )));
    }
    if let Some(max) = constraints.maximum
        && (value > max.limit || (max.exclusive && value == max.limit))
    {
        let relation = if max.exclusive {
            "less than"
        } else {
            "less than or equal to"
        };
        let limit = render_limit(max.limit, number);
        out.push(invalid(format!(
            "{name} in body should be {relation} {limit}"
        )));
    }
    if let Some(min) = constraints.minimum
        && (value < min.limit || (min.exclusive && value == min.limit))
    {
        let relation = if min.exclusive {
            "greater than"
        } else {
            "greater than or equal to"
        };
        let limit = render_limit(min.limit, number);
        out.push(invalid(format!(
            "{name} in body should be {relation} {limit}"
        )));
    }
}

fn is_multiple_of(value: f64, factor: f64) -> bool {
    let quotient = value / factor;
    quotient.is_finite()
        && (quotient - quotient.round()).abs() <= f64::EPSILON * quotient.abs().max(1.0)
}

fn check_array(node: &Node, items: &[Value], path: &Path<'_>, out: &mut Vec<Cause>) {
    if let Some(item_schema) = &node.items {
        for (index, item) in items.iter().enumerate() {
            let embedded = item_schema.embedded_resource;
            check_value(item_schema, item, &path.index(index), embedded, out);
        }
    }
    let name = path.dotted();
    let count = items.len() as u64;
    if let Some(min) = node.min_items
        && count < min
    {
        let detail = format!("{name} in body should have at least {min} items");
        out.push(field_error(
            ErrorType::Invalid,
            name.clone(),
            Some(count.to_string()),
            &detail,
        ));
    }
    if let Some(max) = node.max_items
        && count > max
    {
        out.push(too_many(name, count, max));
    }
    check_list_type(node, items, path, out);
}

/// `field.TooMany`, which says "items" for properties too.
fn too_many(field: String, count: u64, max: u64) -> Cause {
    let unit = if max == 1 { "item" } else { "items" };
    let detail = format!("must have at most {max} {unit}");
    field_error(ErrorType::TooMany, field, Some(count.to_string()), &detail)
}

/// apiextensions' `ValidateListSetsAndMaps`: the second occurrence of a set element or of a
/// map list's key is a duplicate.
fn check_list_type(node: &Node, items: &[Value], path: &Path<'_>, out: &mut Vec<Cause>) {
    let identities: Vec<Value> = match &node.list_type {
        ListType::Atomic => return,
        ListType::Set => items.to_vec(),
        ListType::Map(keys) => {
            if let Some((index, item)) = items
                .iter()
                .enumerate()
                .find(|(_, item)| !item.is_null() && !item.is_object())
            {
                out.push(field_error(
                    ErrorType::Invalid,
                    path.index(index).field_path(),
                    Some(render_value(item)),
                    "must be an object for an array of list-type map",
                ));
                return;
            }
            items.iter().map(|item| list_map_key(keys, item)).collect()
        }
    };
    for (index, identity) in identities.iter().enumerate() {
        let earlier = identities[..index]
            .iter()
            .filter(|other| *other == identity)
            .count();
        if earlier == 1 {
            out.push(field_error(
                ErrorType::Duplicate,
                path.index(index).field_path(),
                Some(render_value(identity)),
                "",
            ));
        }
    }
}

/// The key fields an item of a map list has (none for a null item).
fn list_map_key(keys: &[String], item: &Value) -> Value {
    let mut key = Map::new();
    for name in keys {
        if let Some(value) = item.get(name) {
            key.insert(name.clone(), value.clone());
        }
    }
    Value::Object(key)
}

fn check_object(
    node: &Node,
    map: &Map<String, Value>,
    path: &Path<'_>,
    resource_root: bool,
    out: &mut Vec<Cause>,
) {
    let name = path.dotted();
    let count = map.len() as u64;
    // kube-openapi checks nothing else in an object with too few or too many properties.
    if let Some(min) = node.min_properties
        && count < min
    {
        let detail = format!("{name} in body should have at least {min} properties");
        out.push(field_error(
            ErrorType::Invalid,
            name,
            Some(count.to_string()),
            &detail,
        ));
        return;
    }
    if let Some(max) = node.max_properties
        && count > max
    {
        out.push(too_many(name, count, max));
        return;
    }
    for (key, child) in map {
        if resource_root && key == "metadata" {
            continue;
        }
        if let Some(property) = node.properties.get(key) {
            check_value(
                property,
                child,
                &path.field(key),
                property.embedded_resource,
                out,
            );
        } else if let Some(values) = node.additional_schema() {
            check_value(values, child, &path.key(key), values.embedded_resource, out);
        }
    }
    for key in &node.required {
        if !map.contains_key(key) {
            out.push(field_error(
                ErrorType::Required,
                path.field(key).dotted(),
                None,
                "",
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// String formats (go-openapi strfmt); unknown formats are not checked, as in the API server
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Format {
    DateTime,
    Date,
    Ipv4,
    Ipv6,
    Uuid,
    Byte,
}

static DATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\d{4})-(\d{2})-(\d{2})$").expect("constant regex"));
static TIME_OF_DAY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$")
        .expect("constant regex")
});
static UUID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
        .expect("constant regex")
});
static BASE64: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")
        .expect("constant regex")
});

impl Format {
    fn parse(name: &str) -> Option<Format> {
        Some(match name {
            "date-time" | "datetime" => Format::DateTime,
            "date" => Format::Date,
            "ipv4" => Format::Ipv4,
            "ipv6" => Format::Ipv6,
            "uuid" => Format::Uuid,
            "byte" => Format::Byte,
            _ => return None,
        })
    }

    fn accepts(self, text: &str) -> bool {
        match self {
            Format::DateTime => is_date_time(text),
            Format::Date => is_date(text),
            Format::Ipv4 => text.parse::<Ipv4Addr>().is_ok(),
            Format::Ipv6 => text.parse::<Ipv6Addr>().is_ok(),
            Format::Uuid => UUID.is_match(text),
            Format::Byte => BASE64.is_match(text),
        }
    }
}

/// strfmt's `IsDateTime`: a date, `t`, a time with a zone, case-insensitively.
fn is_date_time(text: &str) -> bool {
    let lower = text.to_lowercase();
    let Some((date, time)) = lower.split_once('t') else {
        return false;
    };
    let Some(parts) = TIME_OF_DAY.captures(time) else {
        return false;
    };
    let field = |index: usize| parts.get(index).map_or("", |part| part.as_str());
    is_date(date) && field(1) <= "23" && field(2) <= "59" && field(3) <= "59"
}

/// strfmt's `IsDate`: Go's `time.Parse("2006-01-02", …)`.
fn is_date(text: &str) -> bool {
    let Some(parts) = DATE.captures(text) else {
        return false;
    };
    let number = |index: usize| {
        parts
            .get(index)
            .and_then(|part| part.as_str().parse::<u32>().ok())
            .unwrap_or(0)
    };
    let (year, month, day) = (number(1), number(2), number(3));
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

// ---------------------------------------------------------------------------------------------
// CEL rules (apiextensions' pkg/apiserver/schema/cel)
// ---------------------------------------------------------------------------------------------

/// The longest `messageExpression` result the API server uses.
const MAX_MESSAGE_EXPRESSION_BYTES: usize = 5 * 1024;

struct RuleCheck<'s> {
    env: &'s Arc<Env>,
    causes: Vec<Cause>,
}

impl RuleCheck<'_> {
    fn walk(
        &mut self,
        node: &Node,
        value: &Value,
        old: Option<&Value>,
        path: &Path<'_>,
        resource_root: bool,
    ) {
        // Rules see only non-null values; a null is checked by the rules of its parent.
        if !node.has_rules || value.is_null() {
            return;
        }
        self.evaluate(node, value, old, path, resource_root);
        match value {
            Value::Object(map) => {
                self.walk_object(
                    node,
                    map,
                    old.and_then(Value::as_object),
                    path,
                    resource_root,
                );
            }
            Value::Array(items) => {
                self.walk_items(node, items, old.and_then(Value::as_array), path);
            }
            _ => {}
        }
    }

    fn walk_object(
        &mut self,
        node: &Node,
        map: &Map<String, Value>,
        old: Option<&Map<String, Value>>,
        path: &Path<'_>,
        resource_root: bool,
    ) {
        for (key, child) in map {
            if resource_root && key == "metadata" {
                continue;
            }
            let old_child = old.and_then(|old| old.get(key));
            if let Some(property) = node.properties.get(key) {
                let embedded = property.embedded_resource;
                self.walk(property, child, old_child, &path.field(key), embedded);
            } else if let Some(values) = node.additional_schema() {
                let embedded = values.embedded_resource;
                self.walk(values, child, old_child, &path.key(key), embedded);
            }
        }
    }

    fn walk_items(
        &mut self,
        node: &Node,
        items: &[Value],
        old: Option<&Vec<Value>>,
        path: &Path<'_>,
    ) {
        let Some(item_schema) = node.items.as_deref() else {
            return;
        };
        for (index, item) in items.iter().enumerate() {
            let old_item = correlated_item(&node.list_type, item, old);
            let embedded = item_schema.embedded_resource;
            self.walk(item_schema, item, old_item, &path.index(index), embedded);
        }
    }

    fn evaluate(
        &mut self,
        node: &Node,
        value: &Value,
        old: Option<&Value>,
        path: &Path<'_>,
        resource_root: bool,
    ) {
        if node.rules.is_empty() {
            return;
        }
        let current = to_cel(Some(node), value, resource_root);
        let previous = old
            .filter(|old| !old.is_null())
            .map(|old| to_cel(Some(node), old, resource_root));
        for rule in &node.rules {
            // Transition rules need a value to compare with, unless oldSelf is optional.
            if rule.uses_old_self && previous.is_none() && !rule.optional_old_self {
                continue;
            }
            let bindings = Bindings {
                value,
                current: &current,
                previous: previous.as_ref(),
            };
            if let Some(cause) = self.outcome(node, rule, &bindings, path) {
                self.causes.push(cause);
            }
        }
    }

    fn outcome(
        &self,
        node: &Node,
        rule: &Rule,
        bindings: &Bindings<'_>,
        path: &Path<'_>,
    ) -> Option<Cause> {
        let context = match activation(self.env, rule, bindings) {
            Ok(context) => context,
            Err(error) => return Some(evaluation_error(node, rule, &error, path)),
        };
        match rule.program.execute(&context) {
            Ok(CelValue::Bool(true)) => None,
            // Anything but true fails the rule, as in the API server.
            Ok(_) => Some(rule_failure(node, rule, bindings.value, &context, path)),
            Err(error) => Some(evaluation_error(node, rule, &error, path)),
        }
    }
}

/// The values a rule is evaluated with.
struct Bindings<'b> {
    value: &'b Value,
    current: &'b CelValue,
    previous: Option<&'b CelValue>,
}

fn activation(
    env: &Arc<Env>,
    rule: &Rule,
    bindings: &Bindings<'_>,
) -> Result<Context<'static, 'static>, ExecutionError> {
    let mut context = Context::with_env(Arc::clone(env));
    context.add_variable_as_val("self", boxed(bindings.current)?);
    let old_self: Option<Box<dyn Val>> = match (bindings.previous, rule.optional_old_self) {
        (Some(previous), false) => Some(boxed(previous)?),
        (Some(previous), true) => Some(Box::new(CelOptional::of(boxed(previous)?))),
        (None, true) => Some(Box::new(CelOptional::none())),
        (None, false) => None,
    };
    if let Some(old_self) = old_self {
        context.add_variable_as_val("oldSelf", old_self);
    }
    Ok(context)
}

fn boxed(value: &CelValue) -> Result<Box<dyn Val>, ExecutionError> {
    value.clone().try_into()
}

/// The stored item a new item of a list is compared with: only map lists pair items, by key.
fn correlated_item<'o>(
    list_type: &ListType,
    item: &Value,
    old: Option<&'o Vec<Value>>,
) -> Option<&'o Value> {
    let ListType::Map(keys) = list_type else {
        return None;
    };
    if !item.is_object() {
        return None;
    }
    old?.iter().find(|candidate| {
        candidate.is_object() && list_map_key(keys, candidate) == list_map_key(keys, item)
    })
}

/// A rule that did not hold. Current upstream shows the value of a scalar and omits that of an
/// object or array (servers before that change showed the schema type instead: `"object"`).
fn rule_failure(
    node: &Node,
    rule: &Rule,
    value: &Value,
    context: &Context<'_, '_>,
    path: &Path<'_>,
) -> Cause {
    let mut field = path.field_path();
    if let Some(field_path) = &rule.field_path {
        if !field.is_empty() {
            field.push('.');
        }
        field.push_str(field_path);
    }
    let shown = match node.json_type {
        Some(JsonType::Object | JsonType::Array) => None,
        _ => Some(render_value(value)),
    };
    // field.Duplicate carries no detail.
    let detail = if rule.reason == ErrorType::Duplicate {
        String::new()
    } else {
        failure_detail(rule, context)
    };
    field_error(rule.reason, field, shown, &detail)
}

/// The `messageExpression` result when usable, else the message or `failed rule: …`.
fn failure_detail(rule: &Rule, context: &Context<'_, '_>) -> String {
    rule.message_expression
        .as_ref()
        .and_then(|expression| match expression.execute(context) {
            Ok(CelValue::String(message)) => {
                let trimmed = message.trim();
                let usable = !trimmed.is_empty()
                    && !trimmed.contains('\n')
                    && trimmed.len() <= MAX_MESSAGE_EXPRESSION_BYTES;
                usable.then(|| trimmed.to_owned())
            }
            _ => None,
        })
        .unwrap_or_else(|| rule.default_message())
}

/// A rule that could not be evaluated: the API server quotes the schema type here.
fn evaluation_error(node: &Node, rule: &Rule, error: &ExecutionError, path: &Path<'_>) -> Cause {
    let detail = match error {
        ExecutionError::NoSuchOverload(_) => format!(
            "'no such overload: {error}': call arguments did not match a supported operator, \
             function or macro signature for rule: {}",
            rule.error_string()
        ),
        ExecutionError::NoSuchKey(key) => {
            format!(
                "no such key: {key} evaluating rule: {}",
                rule.error_string()
            )
        }
        other => format!("{other} evaluating rule: {}", rule.error_string()),
    };
    field_error(
        ErrorType::Invalid,
        path.field_path(),
        Some(go_quote(node.type_label())),
        &detail,
    )
}

/// apiextensions' `UnstructuredToVal`: the value as CEL sees it through its schema. Objects
/// hold their declared properties (escaped), maps all their entries; at a resource root only
/// `apiVersion`, `kind`, `metadata.name` and `metadata.generateName` of the metadata fields.
fn to_cel(node: Option<&Node>, value: &Value, resource_root: bool) -> CelValue {
    match value {
        Value::Null => CelValue::Null,
        Value::Bool(flag) => CelValue::Bool(*flag),
        Value::Number(number) => number_to_cel(node.and_then(|node| node.json_type), number),
        Value::String(text) => CelValue::String(Arc::new(text.clone())),
        Value::Array(items) => {
            let item_schema = node.and_then(|node| node.items.as_deref());
            let embedded = item_schema.is_some_and(|schema| schema.embedded_resource);
            CelValue::List(Arc::new(
                items
                    .iter()
                    .map(|item| to_cel(item_schema, item, embedded))
                    .collect(),
            ))
        }
        Value::Object(map) => object_to_cel(node, map, resource_root),
    }
}

fn number_to_cel(json_type: Option<JsonType>, number: &Number) -> CelValue {
    let float = number.as_f64().unwrap_or_default();
    if json_type == Some(JsonType::Number) {
        return CelValue::Float(float);
    }
    if let Some(int) = number.as_i64() {
        CelValue::Int(int)
    } else if let Some(uint) = number.as_u64() {
        CelValue::UInt(uint)
    } else if json_type == Some(JsonType::Integer)
        && float.fract() == 0.0
        && (i64::MIN as f64..i64::MAX as f64).contains(&float)
    {
        CelValue::Int(float as i64)
    } else {
        CelValue::Float(float)
    }
}

fn object_to_cel(node: Option<&Node>, map: &Map<String, Value>, resource_root: bool) -> CelValue {
    let mut fields: HashMap<String, CelValue> = HashMap::new();
    for (key, child) in map {
        if resource_root && is_meta_field(key) {
            if let Some(meta) = meta_field_to_cel(key, child) {
                fields.insert(key.clone(), meta);
            }
            continue;
        }
        let Some(schema) = node else {
            fields.insert(key.clone(), to_cel(None, child, false));
            continue;
        };
        if let Some(property) = schema.properties.get(key) {
            // Properties whose names cannot be escaped are invisible to CEL.
            if let Some(name) = escape_property_name(key) {
                fields.insert(
                    name,
                    to_cel(Some(property), child, property.embedded_resource),
                );
            }
            continue;
        }
        match &schema.additional {
            Additional::Schema(values) => {
                let embedded = values.embedded_resource;
                fields.insert(key.clone(), to_cel(Some(values), child, embedded));
            }
            Additional::Unconstrained => {
                fields.insert(key.clone(), to_cel(None, child, false));
            }
            Additional::Absent
                if schema.preserve_unknown_fields && schema.properties.is_empty() =>
            {
                fields.insert(key.clone(), to_cel(None, child, false));
            }
            Additional::Absent => {}
        }
    }
    CelValue::from(fields)
}

fn meta_field_to_cel(key: &str, value: &Value) -> Option<CelValue> {
    match key {
        "apiVersion" | "kind" => value
            .as_str()
            .map(|text| CelValue::String(Arc::new(text.to_owned()))),
        "metadata" => {
            let metadata = value.as_object()?;
            let visible: HashMap<String, CelValue> = ["name", "generateName"]
                .into_iter()
                .filter_map(|name| {
                    let text = metadata.get(name)?.as_str()?;
                    Some((name.to_owned(), CelValue::String(Arc::new(text.to_owned()))))
                })
                .collect();
            Some(CelValue::from(visible))
        }
        _ => None,
    }
}

/// CEL's reserved words, which Kubernetes escapes as `__word__`.
const CEL_RESERVED: [&str; 21] = [
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// k8s.io/apiserver/pkg/cel `Escape`: `__` → `__underscores__`, `.` → `__dot__`,
/// `-` → `__dash__`, `/` → `__slash__`; other characters outside `[a-zA-Z0-9_]`, and a leading
/// digit, make the name unusable.
fn escape_property_name(name: &str) -> Option<String> {
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    if CEL_RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    let mut escaped = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(c) = rest.chars().next() {
        if let Some(tail) = rest.strip_prefix("__") {
            escaped.push_str("__underscores__");
            rest = tail;
            continue;
        }
        match c {
            '.' => escaped.push_str("__dot__"),
            '-' => escaped.push_str("__dash__"),
            '/' => escaped.push_str("__slash__"),
            c if c.is_ascii_alphanumeric() || c == '_' => escaped.push(c),
            _ => return None,
        }
        rest = &rest[c.len_utf8()..];
    }
    Some(escaped)
}

#[cfg(test)]
mod tests {
    //! Expected messages follow the API server: kube-openapi's `pkg/validation/errors/schema.go`
    //! for the OpenAPI details, apiextensions-apiserver's `validation.go` for how they become
    //! field errors, `schema/cel/validation.go` for rules and k8s.io/apimachinery's
    //! `field.Error.ErrorBody` for the rendering.

    use super::*;
    use serde_json::json;

    /// The shape of the operator's resource.
    fn operator_schema_json() -> Value {
        json!({
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": {
                    "type": "object",
                    "required": ["storeId", "nodeName", "trays"],
                    "properties": {
                        "storeId": {
                            "type": "integer",
                            "format": "int64",
                            "minimum": 1,
                            "x-kubernetes-validations": [
                                {"rule": "self == oldSelf", "message": "storeId is immutable"}
                            ]
                        },
                        "nodeName": {"type": "string", "minLength": 1},
                        "trays": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["device"],
                                "properties": {
                                    "device": {"type": "string", "pattern": "^/dev/"}
                                }
                            }
                        },
                        "imagePullPolicy": {
                            "type": "string",
                            "enum": ["Always", "IfNotPresent", "Never"],
                            "default": "IfNotPresent"
                        },
                        "recovery": {
                            "type": "object",
                            "default": {},
                            "properties": {
                                "enabled": {"type": "boolean", "default": true},
                                "offlineGracePeriodSeconds": {
                                    "type": "integer", "minimum": 0, "default": 30
                                },
                                "backoffInitialSeconds": {"type": "integer", "default": 5},
                                "backoffMaxSeconds": {"type": "integer", "default": 300}
                            },
                            "x-kubernetes-validations": [{
                                "rule": "self.backoffMaxSeconds >= self.backoffInitialSeconds",
                                "message": "backoffMaxSeconds must not be below backoffInitialSeconds"
                            }]
                        },
                        "settings": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "additionalProperties": {"type": "string"}
                            }
                        }
                    }
                },
                "status": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": false,
                    "properties": {
                        "phase": {"type": "string"},
                        "observedGeneration": {"type": "integer"}
                    }
                }
            }
        })
    }

    fn operator_schema() -> Schema {
        Schema::compile(&operator_schema_json()).expect("the operator's schema compiles")
    }

    fn store(spec: Value) -> Value {
        json!({
            "apiVersion": "pureflash.io/v1",
            "kind": "PureFlashStore",
            "metadata": {"name": "store-1", "namespace": "default"},
            "spec": spec
        })
    }

    fn valid_spec() -> Value {
        json!({"storeId": 1, "nodeName": "node-a", "trays": [{"device": "/dev/nvme0n1"}]})
    }

    /// Defaults, then validates, as the API server does on a write.
    fn causes(schema: &Schema, mut object: Value, old: Option<&Value>) -> Vec<Cause> {
        schema.apply_defaults(&mut object);
        schema.validate(&object, old)
    }

    fn cause(reason: &str, field: &str, message: &str) -> Cause {
        Cause {
            reason: reason.to_owned(),
            field: field.to_owned(),
            message: message.to_owned(),
        }
    }

    /// A schema whose `spec` has the given properties.
    fn spec_schema(properties: Value) -> Schema {
        Schema::compile(&json!({
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": properties}}
        }))
        .expect("the test schema compiles")
    }

    const RULES_NOT_CHECKED: &str = "Invalid value: null: some validation rules were not \
        checked because the object was invalid; correct the existing errors to complete validation";

    // ---- compile ------------------------------------------------------------------------

    #[test]
    fn a_rule_that_does_not_parse_rejects_the_schema_naming_its_path() {
        let mut schema = operator_schema_json();
        schema["properties"]["spec"]["properties"]["storeId"]["x-kubernetes-validations"][0]["rule"] =
            json!("self ==");
        let causes = Schema::compile(&schema).expect_err("a broken rule is rejected");
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(
            causes[0].field,
            "properties[spec].properties[storeId].x-kubernetes-validations[0].rule"
        );
        assert_eq!(causes[0].reason, "FieldValueInvalid");
        assert!(
            causes[0]
                .message
                .starts_with(r#"Invalid value: "self ==": compilation failed: ERROR: <input>:1:"#),
            "{}",
            causes[0].message
        );
    }

    #[test]
    fn every_schema_error_is_reported() {
        let causes = Schema::compile(&json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "pattern": "("},
                "size": {"type": "text"},
                "pools": {"type": "array", "x-kubernetes-list-type": "map"},
                "mode": {
                    "type": "string",
                    "x-kubernetes-validations": [
                        {"rule": "self != ''", "reason": "Nope"},
                        {"rule": "true", "messageExpression": "1 +"},
                        {"rule": "true", "fieldPath": ".missing"},
                        {"message": "no rule"}
                    ]
                }
            }
        }))
        .expect_err("the schema is rejected");
        let fields: Vec<&str> = causes.iter().map(|cause| cause.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "properties[mode].x-kubernetes-validations[0].reason",
                "properties[mode].x-kubernetes-validations[1].messageExpression",
                "properties[mode].x-kubernetes-validations[2].fieldPath",
                "properties[mode].x-kubernetes-validations[3].rule",
                "properties[name].pattern",
                "properties[pools].x-kubernetes-list-map-keys",
                "properties[size].type",
            ]
        );
        assert_eq!(
            causes[0].message,
            r#"Unsupported value: "Nope": supported values: "FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid", "FieldValueRequired""#
        );
        assert_eq!(
            causes[6].message,
            r#"Unsupported value: "text": supported values: "array", "boolean", "integer", "number", "object", "string""#
        );
        assert_eq!(causes[5].reason, "FieldValueRequired");
    }

    #[test]
    fn schema_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Schema>();
    }

    // ---- defaulting -----------------------------------------------------------------------

    #[test]
    fn defaults_fill_absent_fields_and_a_defaulted_object_gets_its_own_defaults() {
        let schema = operator_schema();
        let mut object = store(valid_spec());
        schema.apply_defaults(&mut object);
        assert_eq!(object["spec"]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(
            object["spec"]["recovery"],
            json!({
                "enabled": true,
                "offlineGracePeriodSeconds": 30,
                "backoffInitialSeconds": 5,
                "backoffMaxSeconds": 300
            })
        );
    }

    #[test]
    fn defaults_fill_an_existing_object_and_keep_what_is_set() {
        let schema = operator_schema();
        let mut spec = valid_spec();
        spec["recovery"] = json!({"enabled": false, "backoffMaxSeconds": 60});
        spec["imagePullPolicy"] = json!("Always");
        let mut object = store(spec);
        schema.apply_defaults(&mut object);
        assert_eq!(object["spec"]["imagePullPolicy"], "Always");
        assert_eq!(
            object["spec"]["recovery"],
            json!({
                "enabled": false,
                "offlineGracePeriodSeconds": 30,
                "backoffInitialSeconds": 5,
                "backoffMaxSeconds": 60
            })
        );
    }

    #[test]
    fn null_gets_the_default_unless_the_field_is_nullable() {
        let schema = spec_schema(json!({
            "policy": {"type": "string", "default": "IfNotPresent"},
            "comment": {"type": "string", "nullable": true, "default": "none"}
        }));
        let mut object = json!({"spec": {"policy": null, "comment": null}});
        schema.apply_defaults(&mut object);
        assert_eq!(
            object,
            json!({"spec": {"policy": "IfNotPresent", "comment": null}})
        );
    }

    #[test]
    fn defaults_apply_in_array_items_and_map_values() {
        let schema = spec_schema(json!({
            "trays": {
                "type": "array",
                "items": {
                    "type": "object",
                    "default": {"device": "/dev/null"},
                    "properties": {"weight": {"type": "integer", "default": 1}}
                }
            },
            "pools": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "properties": {"replicas": {"type": "integer", "default": 3}}
                }
            }
        }));
        let mut object = json!({"spec": {
            "trays": [{"device": "/dev/a"}, null],
            "pools": {"fast": {}, "slow": {"replicas": 1}}
        }});
        schema.apply_defaults(&mut object);
        assert_eq!(
            object,
            json!({"spec": {
                "trays": [{"device": "/dev/a", "weight": 1}, {"device": "/dev/null", "weight": 1}],
                "pools": {"fast": {"replicas": 3}, "slow": {"replicas": 1}}
            }})
        );
    }

    #[test]
    fn root_metadata_is_left_alone() {
        let schema = Schema::compile(&json!({
            "type": "object",
            "properties": {
                "metadata": {
                    "type": "object",
                    "properties": {"name": {"type": "string", "maxLength": 1, "default": "x"}}
                }
            }
        }))
        .expect("compiles");
        let mut object = json!({"metadata": {"generateName": "store-", "labels": {"a": "b"}}});
        schema.apply_defaults(&mut object);
        assert_eq!(schema.prune(&mut object), Vec::<String>::new());
        assert_eq!(
            object,
            json!({"metadata": {"generateName": "store-", "labels": {"a": "b"}}})
        );
        let named = json!({"metadata": {"name": "too-long"}});
        assert_eq!(schema.validate(&named, None), vec![]);
    }

    // ---- pruning --------------------------------------------------------------------------

    #[test]
    fn prune_removes_unknown_fields_and_returns_their_paths() {
        let schema = operator_schema();
        let mut spec = valid_spec();
        spec["foo"] = json!(1);
        spec["trays"][0]["bogus"] = json!({"deep": true});
        let mut object = store(spec);
        object["status"] = json!({"phase": "Ready", "unknown": "x"});
        object["extra"] = json!("top-level");
        object["metadata"]["labels"] = json!({"app": "store"});

        let mut pruned = schema.prune(&mut object);
        pruned.sort();
        assert_eq!(
            pruned,
            ["extra", "spec.foo", "spec.trays[0].bogus", "status.unknown"]
        );
        let mut expected = store(valid_spec());
        expected["status"] = json!({"phase": "Ready"});
        expected["metadata"]["labels"] = json!({"app": "store"});
        assert_eq!(object, expected);
    }

    #[test]
    fn preserve_unknown_fields_keeps_unknown_fields_but_prunes_inside_known_ones() {
        let schema = Schema::compile(&json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": true,
                    "properties": {
                        "known": {"type": "object", "properties": {"a": {"type": "integer"}}}
                    }
                }
            }
        }))
        .expect("compiles");
        let mut object = json!({"spec": {"other": {"x": 1}, "known": {"a": 1, "b": 2}}});
        assert_eq!(schema.prune(&mut object), ["spec.known.b"]);
        assert_eq!(
            object,
            json!({"spec": {"other": {"x": 1}, "known": {"a": 1}}})
        );
    }

    #[test]
    fn prune_paths_name_map_entries_with_dots() {
        let schema = spec_schema(json!({
            "pools": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "properties": {"replicas": {"type": "integer"}}
                }
            }
        }));
        let mut object = json!({"spec": {"pools": {"fast": {"replicas": 1, "bogus": 2}}}});
        assert_eq!(schema.prune(&mut object), ["spec.pools.fast.bogus"]);
        assert_eq!(
            object,
            json!({"spec": {"pools": {"fast": {"replicas": 1}}}})
        );
    }

    #[test]
    fn prune_drops_non_nullable_nulls_without_defaults_silently() {
        let schema = spec_schema(json!({
            "nodeName": {"type": "string"},
            "comment": {"type": "string", "nullable": true},
            "policy": {"type": "string", "default": "Always"}
        }));
        let mut object = json!({"spec": {"nodeName": null, "comment": null, "policy": null}});
        assert_eq!(schema.prune(&mut object), Vec::<String>::new());
        assert_eq!(object, json!({"spec": {"comment": null, "policy": null}}));
    }

    #[test]
    fn embedded_resources_keep_api_version_kind_and_metadata() {
        let schema = spec_schema(json!({
            "template": {
                "type": "object",
                "x-kubernetes-embedded-resource": true,
                "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
            }
        }));
        let template = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"labels": {"a": "b"}},
            "spec": {"containers": []}
        });
        let mut object = json!({"spec": {"template": template.clone()}});
        object["spec"]["template"]["status"] = json!({});
        assert_eq!(schema.prune(&mut object), ["spec.template.status"]);
        assert_eq!(object, json!({"spec": {"template": template}}));
    }

    // ---- OpenAPI validation ---------------------------------------------------------------

    #[test]
    fn a_valid_store_has_no_causes_on_create_or_update() {
        let schema = operator_schema();
        assert_eq!(causes(&schema, store(valid_spec()), None), vec![]);
        let mut old = store(valid_spec());
        schema.apply_defaults(&mut old);
        assert_eq!(causes(&schema, store(valid_spec()), Some(&old)), vec![]);
    }

    #[test]
    fn a_wrong_type_is_one_type_invalid_cause_and_rules_are_not_checked() {
        let schema = operator_schema();
        let mut spec = valid_spec();
        spec["storeId"] = json!("string");
        assert_eq!(
            causes(&schema, store(spec), None),
            vec![
                cause(
                    "FieldValueTypeInvalid",
                    "spec.storeId",
                    r#"Invalid value: "string": spec.storeId in body must be of type integer: "string""#
                ),
                cause("FieldValueInvalid", "<nil>", RULES_NOT_CHECKED),
            ]
        );
    }

    #[test]
    fn nothing_below_a_value_of_the_wrong_type_is_checked() {
        let schema = operator_schema();
        let mut spec = valid_spec();
        spec["trays"] = json!({"device": 1});
        let found = causes(&schema, store(spec), None);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            found[0],
            cause(
                "FieldValueTypeInvalid",
                "spec.trays",
                r#"Invalid value: "object": spec.trays in body must be of type array: "object""#
            )
        );
    }

    #[test]
    fn a_missing_required_field_is_required_value() {
        let schema = operator_schema();
        let mut spec = valid_spec();
        spec.as_object_mut().expect("object").remove("nodeName");
        assert_eq!(
            causes(&schema, store(spec), None),
            vec![
                cause("FieldValueRequired", "spec.nodeName", "Required value"),
                cause("FieldValueInvalid", "<nil>", RULES_NOT_CHECKED),
            ]
        );
    }

    #[test]
    fn a_value_outside_the_enum_is_unsupported() {
        let schema = operator_schema();
        let mut spec = valid_spec();
        spec["imagePullPolicy"] = json!("Sometimes");
        assert_eq!(
            causes(&schema, store(spec), None)[0],
            cause(
                "FieldValueNotSupported",
                "spec.imagePullPolicy",
                r#"Unsupported value: "Sometimes": supported values: "Always", "IfNotPresent", "Never""#
            )
        );
    }

    #[test]
    fn numeric_bounds() {
        let schema = operator_schema();
        let mut spec = valid_spec();
        spec["storeId"] = json!(0);
        assert_eq!(
            causes(&schema, store(spec), None),
            vec![cause(
                "FieldValueInvalid",
                "spec.storeId",
                "Invalid value: 0: spec.storeId in body should be greater than or equal to 1"
            )]
        );

        let schema = spec_schema(json!({
            "ratio": {"type": "number", "maximum": 1, "exclusiveMaximum": true},
            "count": {"type": "integer", "maximum": 10, "minimum": 2, "exclusiveMinimum": true},
            "step": {"type": "integer", "multipleOf": 5}
        }));
        let object = json!({"spec": {"ratio": 1, "count": 11, "step": 7}});
        assert_eq!(
            schema.validate(&object, None),
            vec![
                cause(
                    "FieldValueInvalid",
                    "spec.count",
                    "Invalid value: 11: spec.count in body should be less than or equal to 10"
                ),
                cause(
                    "FieldValueInvalid",
                    "spec.ratio",
                    "Invalid value: 1: spec.ratio in body should be less than 1"
                ),
                cause(
                    "FieldValueInvalid",
                    "spec.step",
                    "Invalid value: 7: spec.step in body should be a multiple of 5"
                ),
            ]
        );
        let object = json!({"spec": {"ratio": 0.5, "count": 2, "step": 10}});
        assert_eq!(
            schema.validate(&object, None),
            vec![cause(
                "FieldValueInvalid",
                "spec.count",
                "Invalid value: 2: spec.count in body should be greater than 2"
            )]
        );
    }

    #[test]
    fn string_lengths_count_characters() {
        let schema = operator_schema();
        let mut spec = valid_spec();
        spec["nodeName"] = json!("");
        assert_eq!(
            causes(&schema, store(spec), None),
            vec![cause(
                "FieldValueInvalid",
                "spec.nodeName",
                r#"Invalid value: "": spec.nodeName in body should be at least 1 chars long"#
            )]
        );

        let schema = spec_schema(json!({
            "code": {"type": "string", "maxLength": 3},
            "flag": {"type": "string", "maxLength": 1}
        }));
        assert_eq!(
            schema.validate(&json!({"spec": {"code": "ééé", "flag": "y"}}), None),
            vec![]
        );
        assert_eq!(
            schema.validate(&json!({"spec": {"code": "abcd", "flag": "yes"}}), None),
            vec![
                cause(
                    "FieldValueTooLong",
                    "spec.code",
                    "Too long: may not be more than 3 bytes"
                ),
                cause(
                    "FieldValueTooLong",
                    "spec.flag",
                    "Too long: may not be more than 1 byte"
                ),
            ]
        );
    }

    #[test]
    fn item_counts() {
        let schema = operator_schema();
        let mut spec = valid_spec();
        spec["trays"] = json!([]);
        assert_eq!(
            causes(&schema, store(spec), None),
            vec![cause(
                "FieldValueInvalid",
                "spec.trays",
                "Invalid value: 0: spec.trays in body should have at least 1 items"
            )]
        );

        let schema = spec_schema(json!({
            "pair": {"type": "array", "maxItems": 2, "items": {"type": "integer"}},
            "one": {"type": "array", "maxItems": 1, "items": {"type": "integer"}}
        }));
        assert_eq!(
            schema.validate(&json!({"spec": {"pair": [1, 2, 3], "one": [1, 2]}}), None),
            vec![
                cause(
                    "FieldValueTooMany",
                    "spec.one",
                    "Too many: 2: must have at most 1 item"
                ),
                cause(
                    "FieldValueTooMany",
                    "spec.pair",
                    "Too many: 3: must have at most 2 items"
                ),
            ]
        );
    }

    #[test]
    fn property_counts() {
        let schema = spec_schema(json!({
            "labels": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 2,
                "additionalProperties": {"type": "string", "minLength": 5}
            }
        }));
        assert_eq!(
            schema.validate(&json!({"spec": {"labels": {}}}), None),
            vec![cause(
                "FieldValueInvalid",
                "spec.labels",
                "Invalid value: 0: spec.labels in body should have at least 1 properties"
            )]
        );
        // Nothing inside an object with too many properties is checked.
        assert_eq!(
            schema.validate(
                &json!({"spec": {"labels": {"a": "", "b": "", "c": ""}}}),
                None
            ),
            vec![cause(
                "FieldValueTooMany",
                "spec.labels",
                "Too many: 3: must have at most 2 items"
            )]
        );
        assert_eq!(
            schema.validate(&json!({"spec": {"labels": {"engine": "x"}}}), None),
            vec![cause(
                "FieldValueInvalid",
                "spec.labels.engine",
                r#"Invalid value: "x": spec.labels.engine in body should be at least 5 chars long"#
            )]
        );
    }

    #[test]
    fn a_pattern_mismatch_names_the_item() {
        let schema = operator_schema();
        let mut spec = valid_spec();
        spec["trays"] = json!([{"device": "/dev/a"}, {"device": "sda"}]);
        assert_eq!(
            causes(&schema, store(spec), None),
            vec![cause(
                "FieldValueInvalid",
                "spec.trays[1].device",
                r#"Invalid value: "sda": spec.trays[1].device in body should match '^/dev/'"#
            )]
        );
    }

    #[test]
    fn known_formats_are_checked_and_others_ignored() {
        let schema = spec_schema(json!({
            "at": {"type": "string", "format": "date-time"},
            "day": {"type": "string", "format": "date"},
            "address": {"type": "string", "format": "ipv4"},
            "id": {"type": "string", "format": "uuid"},
            "small": {"type": "integer", "format": "int32"},
            "host": {"type": "string", "format": "made-up"}
        }));
        let good = json!({"spec": {
            "at": "2024-02-29T10:00:00.5+02:00",
            "day": "2024-02-29",
            "address": "10.0.0.1",
            "id": "0f8fad5b-d9cb-469f-a165-70867728950e",
            "small": 9_999_999_999_i64,
            "host": "anything"
        }});
        assert_eq!(schema.validate(&good, None), vec![]);
        let bad = json!({"spec": {
            "at": "yesterday",
            "day": "2023-02-29",
            "address": "300.1.1.1",
            "id": "not-a-uuid"
        }});
        assert_eq!(
            schema.validate(&bad, None),
            vec![
                cause(
                    "FieldValueTypeInvalid",
                    "spec.address",
                    r#"Invalid value: "300.1.1.1": spec.address in body must be of type ipv4: "300.1.1.1""#
                ),
                cause(
                    "FieldValueTypeInvalid",
                    "spec.at",
                    r#"Invalid value: "yesterday": spec.at in body must be of type date-time: "yesterday""#
                ),
                cause(
                    "FieldValueTypeInvalid",
                    "spec.day",
                    r#"Invalid value: "2023-02-29": spec.day in body must be of type date: "2023-02-29""#
                ),
                cause(
                    "FieldValueTypeInvalid",
                    "spec.id",
                    r#"Invalid value: "not-a-uuid": spec.id in body must be of type uuid: "not-a-uuid""#
                ),
            ]
        );
    }

    #[test]
    fn null_is_accepted_only_where_nullable() {
        let schema = spec_schema(json!({
            "name": {"type": "string"},
            "comment": {"type": "string", "nullable": true}
        }));
        assert_eq!(
            schema.validate(&json!({"spec": {"name": null, "comment": null}}), None),
            vec![cause(
                "FieldValueTypeInvalid",
                "spec.name",
                r#"Invalid value: "null": spec.name in body must be of type string: "null""#
            )]
        );
    }

    #[test]
    fn integers_numbers_and_int_or_string() {
        let schema = spec_schema(json!({
            "count": {"type": "integer"},
            "ratio": {"type": "number"},
            "port": {"x-kubernetes-int-or-string": true}
        }));
        // A float that is a whole number is an integer to the API server.
        for valid in [
            json!({"count": 3.0, "ratio": 2, "port": 80}),
            json!({"count": 3, "ratio": 0.5, "port": "http"}),
        ] {
            assert_eq!(schema.validate(&json!({"spec": valid}), None), vec![]);
        }
        assert_eq!(
            schema.validate(&json!({"spec": {"count": 3.5, "port": true}}), None),
            vec![
                cause(
                    "FieldValueTypeInvalid",
                    "spec.count",
                    r#"Invalid value: "number": spec.count in body must be of type integer: "number""#
                ),
                cause(
                    "FieldValueTypeInvalid",
                    "spec.port",
                    r#"Invalid value: "boolean": spec.port in body must be of type integer,string: "boolean""#
                ),
            ]
        );
    }

    #[test]
    fn set_and_map_lists_reject_duplicates() {
        let schema = spec_schema(json!({
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "pools": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}}}
            }
        }));
        let object = json!({"spec": {
            "tags": ["a", "b", "a", "a"],
            "pools": [{"name": "x"}, {"name": "y"}, {"name": "x"}]
        }});
        assert_eq!(
            schema.validate(&object, None),
            vec![
                cause(
                    "FieldValueDuplicate",
                    "spec.pools[2]",
                    r#"Duplicate value: {"name":"x"}"#
                ),
                cause(
                    "FieldValueDuplicate",
                    "spec.tags[2]",
                    r#"Duplicate value: "a""#
                ),
            ]
        );
        let atomic = spec_schema(json!({"tags": {"type": "array", "items": {"type": "string"}}}));
        assert_eq!(
            atomic.validate(&json!({"spec": {"tags": ["a", "a"]}}), None),
            vec![]
        );
    }

    #[test]
    fn schemas_without_rules_add_no_note_about_unchecked_rules() {
        let schema = spec_schema(json!({"count": {"type": "integer"}}));
        assert_eq!(
            schema.validate(&json!({"spec": {"count": "x"}}), None),
            vec![cause(
                "FieldValueTypeInvalid",
                "spec.count",
                r#"Invalid value: "string": spec.count in body must be of type integer: "string""#
            )]
        );
    }

    // ---- CEL rules ------------------------------------------------------------------------

    #[test]
    fn a_transition_rule_is_skipped_on_create_and_enforced_on_update() {
        let schema = operator_schema();
        let mut old = store(valid_spec());
        schema.apply_defaults(&mut old);
        let mut moved = valid_spec();
        moved["storeId"] = json!(2);
        assert_eq!(causes(&schema, store(moved.clone()), None), vec![]);
        assert_eq!(
            causes(&schema, store(moved), Some(&old)),
            vec![cause(
                "FieldValueInvalid",
                "spec.storeId",
                "Invalid value: 2: storeId is immutable"
            )]
        );
    }

    #[test]
    fn a_transition_rule_is_skipped_for_a_field_new_in_the_update() {
        let schema = spec_schema(json!({
            "zone": {
                "type": "string",
                "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "immutable"}]
            }
        }));
        let old = json!({"spec": {}});
        let new = json!({"spec": {"zone": "a"}});
        assert_eq!(schema.validate(&new, Some(&old)), vec![]);
        let changed = json!({"spec": {"zone": "b"}});
        assert_eq!(
            schema.validate(&changed, Some(&new)),
            vec![cause(
                "FieldValueInvalid",
                "spec.zone",
                r#"Invalid value: "b": immutable"#
            )]
        );
    }

    #[test]
    fn a_failed_object_rule_omits_the_value() {
        let schema = operator_schema();
        let mut spec = valid_spec();
        spec["recovery"] = json!({"backoffInitialSeconds": 60, "backoffMaxSeconds": 10});
        assert_eq!(
            causes(&schema, store(spec), None),
            vec![cause(
                "FieldValueInvalid",
                "spec.recovery",
                "Invalid value: backoffMaxSeconds must not be below backoffInitialSeconds"
            )]
        );
    }

    #[test]
    fn messages_default_to_the_rule_and_message_expressions_win() {
        let schema = spec_schema(json!({
            "name": {
                "type": "string",
                "x-kubernetes-validations": [
                    {"rule": "self.size() > 2"},
                    {"rule": "self != 'ab'", "message": "not ab",
                     "messageExpression": "'got ' + self"},
                    {"rule": "self.startsWith('x')", "message": "must start with x",
                     "messageExpression": "42"}
                ]
            }
        }));
        assert_eq!(
            schema.validate(&json!({"spec": {"name": "ab"}}), None),
            vec![
                cause(
                    "FieldValueInvalid",
                    "spec.name",
                    r#"Invalid value: "ab": failed rule: self.size() > 2"#
                ),
                cause(
                    "FieldValueInvalid",
                    "spec.name",
                    r#"Invalid value: "ab": got ab"#
                ),
                cause(
                    "FieldValueInvalid",
                    "spec.name",
                    r#"Invalid value: "ab": must start with x"#
                ),
            ]
        );
    }

    #[test]
    fn reasons_and_field_paths_shape_the_cause() {
        let schema = spec_schema(json!({
            "recovery": {
                "type": "object",
                "properties": {
                    "initial": {"type": "integer"},
                    "max": {"type": "integer"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}}
                },
                "x-kubernetes-validations": [
                    {"rule": "self.max >= self.initial", "message": "max below initial",
                     "fieldPath": ".max", "reason": "FieldValueForbidden"},
                    {"rule": "has(self.labels)", "message": "labels are needed",
                     "reason": "FieldValueRequired", "fieldPath": ".labels"},
                    {"rule": "!has(self.labels) || !('dup' in self.labels)",
                     "reason": "FieldValueDuplicate", "fieldPath": ".labels['dup']"}
                ]
            }
        }));
        assert_eq!(
            schema.validate(
                &json!({"spec": {"recovery": {"initial": 5, "max": 1}}}),
                None
            ),
            vec![
                cause(
                    "FieldValueForbidden",
                    "spec.recovery.max",
                    "Forbidden: max below initial"
                ),
                cause(
                    "FieldValueRequired",
                    "spec.recovery.labels",
                    "Required value: labels are needed"
                ),
            ]
        );
        let duplicate =
            json!({"spec": {"recovery": {"initial": 1, "max": 2, "labels": {"dup": "x"}}}});
        assert_eq!(
            schema.validate(&duplicate, None),
            vec![cause(
                "FieldValueDuplicate",
                "spec.recovery.labels[dup]",
                "Duplicate value"
            )]
        );
    }

    #[test]
    fn an_evaluation_error_is_a_cause_not_a_panic() {
        let schema = spec_schema(json!({
            "recovery": {
                "type": "object",
                "properties": {"max": {"type": "integer"}},
                "x-kubernetes-validations": [
                    {"rule": "self.max > 0"},
                    {"rule": "self.max > 'x'", "message": "max compared"}
                ]
            }
        }));
        let found = schema.validate(&json!({"spec": {"recovery": {}}}), None);
        assert_eq!(
            found[0],
            cause(
                "FieldValueInvalid",
                "spec.recovery",
                r#"Invalid value: "object": no such key: max evaluating rule: self.max > 0"#
            )
        );
        let found = schema.validate(&json!({"spec": {"recovery": {"max": 1}}}), None);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0]
                .message
                .starts_with(r#"Invalid value: "object": 'no such overload: "#)
                && found[0].message.ends_with(
                    "': call arguments did not match a supported operator, function or macro \
                     signature for rule: max compared"
                ),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn kubernetes_library_functions_the_crate_lacks_fail_when_evaluated() {
        let schema = spec_schema(json!({
            "sizes": {
                "type": "array",
                "items": {"type": "integer"},
                "x-kubernetes-validations": [{"rule": "self.isSorted()"}]
            }
        }));
        assert_eq!(
            schema.validate(&json!({"spec": {"sizes": [1, 2]}}), None),
            vec![cause(
                "FieldValueInvalid",
                "spec.sizes",
                r#"Invalid value: "array": Undeclared reference to 'isSorted' evaluating rule: self.isSorted()"#
            )]
        );
    }

    #[test]
    fn rules_on_items_and_map_values_run_per_element() {
        let mut schema = operator_schema_json();
        let spec = &mut schema["properties"]["spec"]["properties"];
        spec["trays"]["items"]["x-kubernetes-validations"] =
            json!([{"rule": "self.device.startsWith('/dev/nvme')", "message": "NVMe only"}]);
        spec["settings"]["additionalProperties"]["x-kubernetes-validations"] =
            json!([{"rule": "self.all(k, k.matches('^[a-z]+$'))", "message": "lowercase keys"}]);
        let schema = Schema::compile(&schema).expect("compiles");
        let mut spec = valid_spec();
        spec["trays"] = json!([{"device": "/dev/nvme0n1"}, {"device": "/dev/sda"}]);
        spec["settings"] = json!({"engine": {"Mode": "fast"}, "cache": {"size": "1G"}});
        assert_eq!(
            causes(&schema, store(spec), None),
            vec![
                cause(
                    "FieldValueInvalid",
                    "spec.settings[engine]",
                    "Invalid value: lowercase keys"
                ),
                cause(
                    "FieldValueInvalid",
                    "spec.trays[1]",
                    "Invalid value: NVMe only"
                ),
            ]
        );
    }

    #[test]
    fn map_list_items_meet_their_old_selves_by_key() {
        let schema = spec_schema(json!({
            "pools": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "size": {"type": "integer"}},
                    "x-kubernetes-validations": [
                        {"rule": "self.size >= oldSelf.size", "message": "pools only grow"}
                    ]
                }
            }
        }));
        let old = json!({"spec": {"pools": [{"name": "a", "size": 1}, {"name": "b", "size": 5}]}});
        let reordered =
            json!({"spec": {"pools": [{"name": "b", "size": 5}, {"name": "a", "size": 2}]}});
        assert_eq!(schema.validate(&reordered, Some(&old)), vec![]);
        let shrunk =
            json!({"spec": {"pools": [{"name": "c", "size": 0}, {"name": "b", "size": 4}]}});
        assert_eq!(
            schema.validate(&shrunk, Some(&old)),
            vec![cause(
                "FieldValueInvalid",
                "spec.pools[1]",
                "Invalid value: pools only grow"
            )]
        );
    }

    #[test]
    fn optional_old_self_is_none_on_create() {
        let schema = spec_schema(json!({
            "generation": {
                "type": "integer",
                "x-kubernetes-validations": [{
                    "rule": "oldSelf.hasValue() ? self >= oldSelf.value() : self == 1",
                    "optionalOldSelf": true,
                    "message": "starts at 1 and never decreases"
                }]
            }
        }));
        let one = json!({"spec": {"generation": 1}});
        let two = json!({"spec": {"generation": 2}});
        assert_eq!(schema.validate(&one, None), vec![]);
        assert_eq!(
            schema.validate(&two, None),
            vec![cause(
                "FieldValueInvalid",
                "spec.generation",
                "Invalid value: 2: starts at 1 and never decreases"
            )]
        );
        assert_eq!(schema.validate(&two, Some(&one)), vec![]);
        assert_eq!(schema.validate(&one, Some(&two)).len(), 1);
    }

    #[test]
    fn root_rules_see_the_name_kind_and_api_version_only() {
        let mut schema = operator_schema_json();
        schema["x-kubernetes-validations"] = json!([
            {"rule": "self.metadata.name.startsWith('store-') && self.kind == 'PureFlashStore'",
             "message": "stores are named store-*"},
            {"rule": "!has(self.metadata.namespace)", "message": "namespace is hidden"}
        ]);
        let schema = Schema::compile(&schema).expect("compiles");
        assert_eq!(causes(&schema, store(valid_spec()), None), vec![]);
        let mut renamed = store(valid_spec());
        renamed["metadata"]["name"] = json!("other");
        assert_eq!(
            causes(&schema, renamed, None),
            vec![cause(
                "FieldValueInvalid",
                "<nil>",
                "Invalid value: stores are named store-*"
            )]
        );
    }

    #[test]
    fn rules_under_preserve_unknown_fields_see_the_known_parts() {
        let schema = spec_schema(json!({
            "extra": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "properties": {"replicas": {"type": "integer"}},
                "x-kubernetes-validations": [
                    {"rule": "self.replicas >= 1 && !has(self.unknown)", "message": "one replica"}
                ]
            }
        }));
        let object = json!({"spec": {"extra": {"replicas": 1, "unknown": {"a": 1}}}});
        assert_eq!(schema.validate(&object, None), vec![]);
        let object = json!({"spec": {"extra": {"replicas": 0}}});
        assert_eq!(schema.validate(&object, None).len(), 1);
    }

    #[test]
    fn property_names_are_escaped_as_in_kubernetes() {
        let schema = spec_schema(json!({
            "limits": {
                "type": "object",
                "properties": {
                    "max-size": {"type": "integer"},
                    "namespace": {"type": "string"},
                    "a__b.c/d": {"type": "string"}
                },
                "x-kubernetes-validations": [{
                    "rule": "self.max__dash__size > 0 && self.__namespace__ == 'ns' \
                             && self.a__underscores__b__dot__c__slash__d == 'x'"
                }]
            }
        }));
        let object =
            json!({"spec": {"limits": {"max-size": 1, "namespace": "ns", "a__b.c/d": "x"}}});
        assert_eq!(schema.validate(&object, None), vec![]);
        assert_eq!(escape_property_name("9lives"), None);
        assert_eq!(escape_property_name("a b"), None);
        assert_eq!(
            escape_property_name("a___b").as_deref(),
            Some("a__underscores___b")
        );
    }

    #[test]
    fn standard_and_string_library_functions_are_available() {
        let schema = spec_schema(json!({
            "device": {
                "type": "string",
                "x-kubernetes-validations": [
                    {"rule": "self.startsWith('/dev/') && self.endsWith('n1') && self.contains('nvme')"},
                    {"rule": "self.matches('^/dev/[a-z0-9]+$') && self.lowerAscii() == self"},
                    {"rule": "self.split('/').size() == 3 && self.substring(5) == 'nvme0n1'"},
                    {"rule": "['a', 'b'].exists_one(x, x == 'a') && [1, 2].map(x, x * 2) == [2, 4]"},
                    {"rule": "[1, 2, 3].filter(x, x > 1).all(x, x > 1) && [1].exists(x, x == 1)"}
                ]
            }
        }));
        assert_eq!(
            schema.validate(&json!({"spec": {"device": "/dev/nvme0n1"}}), None),
            vec![]
        );
    }

    // ---- rendering --------------------------------------------------------------------------

    #[test]
    fn values_are_rendered_as_go_renders_them() {
        assert_eq!(go_float(1.5), "1.5");
        assert_eq!(go_float(3.0), "3");
        assert_eq!(go_float(123_456.0), "123456");
        assert_eq!(go_float(1e6), "1e+06");
        assert_eq!(go_float(0.000_015), "1.5e-05");
        assert_eq!(go_quote("a\"b\\c\n\u{1}é"), r#""a\"b\\c\n\x01é""#);
        assert_eq!(
            render_value(&json!({"b": 1, "a": [true, null]})),
            r#"{"a":[true,null],"b":1}"#
        );
        assert_eq!(render_value(&json!(2.5)), "2.5");
    }
}
