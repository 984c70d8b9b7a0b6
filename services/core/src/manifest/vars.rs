//! Template variables' names: what a `{name}` placeholder (in `prompt` and `defaults.loras`) and
//! a template job's key (`name=value,…@WxH#i`) accept.

/// Whether `name` is a variable's name: one or more ASCII letters, digits and `_`.
pub(super) fn is_var_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The name inside a placeholder `{name}`, or what a name must be.
pub(super) fn placeholder(name: &str) -> Result<&str, String> {
    if is_var_name(name) {
        Ok(name)
    } else {
        Err(format!(
            "placeholder `{{{name}}}` is not a name of letters, digits and `_`"
        ))
    }
}
