//! The numbers in a request's query string (`/echo?bytes=N`,
//! `/photo?size=N&seed=S`): plain code, so the fuzz target reaches it
//! without a connection.

/// A query parameter that is present but not a decimal `u64`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}= takes a number")]
pub struct QueryError {
    /// The parameter's name.
    pub name: String,
}

/// The number in parameter `name` of `query` (the part after `?`, without
/// it); `None` when the parameter is absent. The first occurrence counts.
pub fn query_number(query: &str, name: &str) -> Result<Option<u64>, QueryError> {
    let value = query.split('&').find_map(|pair| {
        pair.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
    });
    match value {
        None => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| QueryError {
            name: name.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_occurrence_and_refuses_what_is_not_a_number() {
        assert_eq!(query_number("bytes=12&seed=3", "seed"), Ok(Some(3)));
        assert_eq!(query_number("bytes=1&bytes=2", "bytes"), Ok(Some(1)));
        assert_eq!(query_number("", "bytes"), Ok(None));
        assert_eq!(query_number("bytesize=4", "bytes"), Ok(None));
        assert!(query_number("bytes=-1", "bytes").is_err());
        assert!(query_number("bytes=18446744073709551616", "bytes").is_err());
        assert_eq!(
            query_number("size=1x", "size").unwrap_err().to_string(),
            "size= takes a number"
        );
    }
}
