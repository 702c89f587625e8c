//! `{name}` templates in profile values: `{tenant}`, `{user}`, `{roles}`, `{database_url}`,
//! `{profile_dir}`, `{model}`. A doubled brace (`{{`) stands for itself.

use std::collections::BTreeMap;

/// The placeholder names in `template`, in order.
pub fn placeholders(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        if rest[start..].starts_with("{{") {
            rest = &rest[start + 2..];
            continue;
        }
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                out.push(after[..end].to_string());
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    out
}

/// `template` with every known placeholder replaced; unknown ones are left as written (the
/// loader has already rejected them).
pub fn expand(template: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        if rest[start..].starts_with("{{") {
            out.push('{');
            rest = &rest[start + 2..];
            continue;
        }
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                match vars.get(name) {
                    Some(v) => out.push_str(v),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out.replace("}}", "}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_expansion() {
        assert_eq!(placeholders("{model}_search"), vec!["model"]);
        assert_eq!(placeholders("a {{literal}} {x}"), vec!["x"]);
        let vars = BTreeMap::from([("model", "orders".to_string())]);
        assert_eq!(expand("{model}_search", &vars), "orders_search");
        assert_eq!(expand("{{x}} {other}", &vars), "{x} {other}");
    }
}
