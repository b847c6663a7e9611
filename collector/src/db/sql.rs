//! SQL text built together with its bind values. [`Sql::bind`] takes a value and returns its placeholder, so a
//! placeholder cannot point at the wrong value: an off-by-one would be a silently wrong answer, not an error.

use tokio_postgres::types::ToSql;

/// A value to bind: owned, so that a statement can be assembled across several functions, or borrowed from
/// the caller (large arrays).
enum Param<'a> {
    Owned(Box<dyn ToSql + Sync + Send>),
    Borrowed(&'a (dyn ToSql + Sync)),
}

/// Bind values in placeholder order, and an optional WHERE clause over them.
#[derive(Default)]
pub struct Sql<'a> {
    /// ` WHERE a AND b ...`, or empty.
    clause: String,
    params: Vec<Param<'a>>,
}

impl<'a> Sql<'a> {
    pub fn new() -> Sql<'a> {
        Sql::default()
    }

    /// Adds `value` and returns its placeholder (`$n`).
    pub fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Param::Owned(Box::new(value)));
        format!("${}", self.params.len())
    }

    /// Adds a borrowed `value` and returns its placeholder (`$n`).
    pub fn bind_ref(&mut self, value: &'a (dyn ToSql + Sync)) -> String {
        self.params.push(Param::Borrowed(value));
        format!("${}", self.params.len())
    }

    /// `AND`s `condition` (whose placeholders came from [`Sql::bind`]) into the WHERE clause.
    pub fn and(&mut self, condition: &str) {
        self.clause.push_str(if self.clause.is_empty() {
            " WHERE "
        } else {
            " AND "
        });
        self.clause.push_str(condition);
    }

    /// ` WHERE ...` (with a leading space), or nothing when no condition was added.
    pub fn where_clause(&self) -> &str {
        &self.clause
    }

    /// The values, to pass with the statement.
    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| match p {
                Param::Owned(v) => &**v as &(dyn ToSql + Sync),
                Param::Borrowed(v) => *v,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_values_bound() {
        let mut q = Sql::new();
        let a = q.bind(1_i32);
        let c = format!(
            "x = {a} AND y BETWEEN {} AND {}",
            q.bind(2_i32),
            q.bind(3_i32)
        );
        q.and(&c);
        let d = format!("z = {}", q.bind("s".to_string()));
        q.and(&d);
        assert_eq!(
            q.where_clause(),
            " WHERE x = $1 AND y BETWEEN $2 AND $3 AND z = $4"
        );
        assert_eq!(q.params().len(), 4);
        assert_eq!(Sql::new().where_clause(), "");
    }
}
