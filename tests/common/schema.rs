//! A validator for the subset of JSON Schema that the API's generated OpenAPI
//! document uses: `$ref`, `type` (one or a list, `null` included), `properties`,
//! `required`, `additionalProperties`, `items`, `enum`, `oneOf`, `allOf`, `format`
//! (date-time, uuid), `minimum` and `maximum`.
//!
//! Stricter than JSON Schema in one way, on purpose: an object may carry only the
//! properties its schema names (unless it has `additionalProperties`). A field the
//! document does not mention is drift, and must fail the test.

use std::collections::BTreeSet;

use serde_json::Value;

use super::http::Response;

/// Asserts that `r` is a documented answer of the operation `method path` (as the
/// document writes the path) in `doc`: its status is listed, its content type is
/// one listed for that status, and a JSON body validates against the schema.
pub fn assert_documented(doc: &Value, method: &str, path: &str, r: &Response) {
    let what = format!("{method} {path} -> {}", r.status);
    let op = &doc["paths"][path][method.to_lowercase()];
    assert!(op.is_object(), "{what}: no such operation");
    let mut response = &op["responses"][r.status.to_string()];
    if let Some(reference) = response["$ref"].as_str() {
        response = Validator { doc }.resolve(reference).unwrap();
    }
    assert!(
        response.is_object(),
        "{what}: status not documented: {}",
        r.text()
    );
    let content_type = r.header("content-type").unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let content = &response["content"];
    if content.is_null() {
        assert!(r.body.is_empty(), "{what}: a body where none is documented");
        return;
    }
    let schema = &content[media]["schema"];
    assert!(
        schema.is_object(),
        "{what}: content type {content_type:?} not documented"
    );
    if media == "application/json" {
        let body: Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", r.text()));
        if let Err(e) = validate(doc, schema, &body) {
            panic!("{what}: the body does not match the document: {e}\n{body}");
        }
    }
}

/// Checks `value` against `schema`, resolving `$ref`s in `doc`. The error names the
/// place in the value (a JSON pointer) and what was wrong.
pub fn validate(doc: &Value, schema: &Value, value: &Value) -> Result<(), String> {
    // Places are written as JSON pointers below `body`: `body/sessions/0/id`.
    Validator { doc }.check(schema, value, "body", true)
}

struct Validator<'a> {
    doc: &'a Value,
}

impl<'a> Validator<'a> {
    fn resolve(&self, reference: &str) -> Result<&'a Value, String> {
        let path = reference
            .strip_prefix("#/")
            .ok_or_else(|| format!("not a local reference: {reference}"))?;
        let target = path.split('/').fold(self.doc, |node, key| &node[key]);
        if target.is_null() {
            return Err(format!("dangling reference {reference}"));
        }
        Ok(target)
    }

    /// `strict`: refuse properties the schema does not name. Off for the members
    /// of an `allOf`, which each name only part of them (the union is checked).
    fn check(&self, schema: &Value, value: &Value, at: &str, strict: bool) -> Result<(), String> {
        if let Some(reference) = schema["$ref"].as_str() {
            return self.check(self.resolve(reference)?, value, at, strict);
        }
        if let Some(all) = schema["allOf"].as_array() {
            for member in all {
                self.check(member, value, at, false)?;
            }
            if strict {
                let mut known = BTreeSet::new();
                for member in all {
                    known.extend(self.property_names(member)?);
                }
                self.only_known(value, &known, at)?;
            }
        }
        if let Some(alternatives) = schema["oneOf"].as_array() {
            let matching = alternatives
                .iter()
                .filter(|alt| self.check(alt, value, at, strict).is_ok())
                .count();
            if matching != 1 {
                return Err(format!("{at}: {value} matches {matching} of oneOf"));
            }
        }
        self.check_type(schema, value, at)?;
        if let Some(allowed) = schema["enum"].as_array() {
            if !allowed.contains(value) {
                return Err(format!("{at}: {value} is not one of {allowed:?}"));
            }
        }
        self.check_bounds(schema, value, at)?;
        self.check_format(schema, value, at)?;
        match value {
            Value::Object(_) => self.check_object(schema, value, at, strict),
            Value::Array(items) => match schema.get("items") {
                Some(item_schema) => items.iter().enumerate().try_for_each(|(i, item)| {
                    self.check(item_schema, item, &format!("{at}/{i}"), true)
                }),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    fn check_type(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            _ => return Ok(()),
        };
        let fits = |t: &str| match t {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "string" => value.is_string(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        };
        if types.iter().any(|t| fits(t)) {
            Ok(())
        } else {
            Err(format!("{at}: {value} is not of type {types:?}"))
        }
    }

    fn check_bounds(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let Some(v) = value.as_f64() else {
            return Ok(());
        };
        if schema["minimum"].as_f64().is_some_and(|min| v < min) {
            return Err(format!(
                "{at}: {v} is below the minimum {}",
                schema["minimum"]
            ));
        }
        if schema["maximum"].as_f64().is_some_and(|max| v > max) {
            return Err(format!(
                "{at}: {v} is above the maximum {}",
                schema["maximum"]
            ));
        }
        Ok(())
    }

    fn check_format(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let (Some(format), Some(text)) = (schema["format"].as_str(), value.as_str()) else {
            return Ok(());
        };
        let valid = match format {
            "date-time" => humantime::parse_rfc3339(text).is_ok(),
            "uuid" => uuid::Uuid::parse_str(text).is_ok(),
            _ => true,
        };
        if valid {
            Ok(())
        } else {
            Err(format!("{at}: {text:?} is not a {format}"))
        }
    }

    fn check_object(
        &self,
        schema: &Value,
        value: &Value,
        at: &str,
        strict: bool,
    ) -> Result<(), String> {
        let object = value.as_object().expect("an object");
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                return Err(format!("{at}: required property `{name}` is missing"));
            }
        }
        let properties = schema["properties"].as_object();
        for (name, v) in object {
            let here = format!("{at}/{name}");
            match properties.and_then(|p| p.get(name)) {
                Some(property) => self.check(property, v, &here, true)?,
                None => match schema.get("additionalProperties") {
                    Some(extra) if extra.is_object() => self.check(extra, v, &here, true)?,
                    Some(Value::Bool(true)) => {}
                    _ if strict && properties.is_some() => {
                        return Err(format!("{here}: property not in the schema"));
                    }
                    _ => {}
                },
            }
        }
        Ok(())
    }

    /// The properties a schema names, through `$ref` and `allOf`.
    fn property_names(&self, schema: &Value) -> Result<BTreeSet<String>, String> {
        if let Some(reference) = schema["$ref"].as_str() {
            return self.property_names(self.resolve(reference)?);
        }
        let mut names: BTreeSet<String> = schema["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        for member in schema["allOf"].as_array().into_iter().flatten() {
            names.extend(self.property_names(member)?);
        }
        Ok(names)
    }

    fn only_known(&self, value: &Value, known: &BTreeSet<String>, at: &str) -> Result<(), String> {
        for name in value.as_object().into_iter().flat_map(|o| o.keys()) {
            if !known.contains(name) {
                return Err(format!("{at}/{name}: property not in the schema"));
            }
        }
        Ok(())
    }
}
