//! What pushed-down filters say about the rows a scan needs: the narrowing a head scan and the
//! block listing can apply. Only what the filters prove is taken; anything else is left to
//! the filters themselves, which DataFusion applies above the scan.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{BinaryExpr, Operator};
use datafusion::prelude::Expr;
use profusion_model::time::TimeRange;

/// The narrowing implied by a conjunction of filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Narrowing {
    /// `time_nanos` bounds, inclusive.
    pub range: Option<TimeRange>,
    pub profile_type: Option<String>,
    pub services: Option<Vec<String>>,
    pub series: Option<Vec<u64>>,
}

impl Narrowing {
    pub fn from_filters(filters: &[Expr]) -> Self {
        let mut n = Self::default();
        for filter in filters {
            for conjunct in split_conjunction(filter) {
                n.take(conjunct);
            }
        }
        n
    }

    fn take(&mut self, expr: &Expr) {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (column, op, value) = match (column_name(left), column_name(right)) {
                    (Some(c), None) => (c, *op, literal(right)),
                    (None, Some(c)) => match op.swap() {
                        Some(swapped) => (c, swapped, literal(left)),
                        None => return,
                    },
                    _ => return,
                };
                let Some(value) = value else { return };
                self.compare(column, op, &value);
            }
            Expr::InList(list) if !list.negated => {
                let Some(column) = column_name(&list.expr) else {
                    return;
                };
                let values: Option<Vec<ScalarValue>> = list.list.iter().map(literal).collect();
                let Some(values) = values else { return };
                match column {
                    "service_name" => {
                        let strings: Option<Vec<String>> = values.iter().map(string).collect();
                        if let Some(s) = strings {
                            self.services = Some(intersect(self.services.take(), s));
                        }
                    }
                    "series_fingerprint" => {
                        let ids: Option<Vec<u64>> = values.iter().map(unsigned).collect();
                        if let Some(ids) = ids {
                            self.series = Some(intersect(self.series.take(), ids));
                        }
                    }
                    _ => {}
                }
            }
            Expr::Between(between) if !between.negated => {
                if column_name(&between.expr) == Some("time_nanos")
                    && let (Some(low), Some(high)) = (
                        literal(&between.low).as_ref().and_then(signed),
                        literal(&between.high).as_ref().and_then(signed),
                    )
                {
                    self.bound_time(low, high);
                }
            }
            _ => {}
        }
    }

    fn compare(&mut self, column: &str, op: Operator, value: &ScalarValue) {
        match (column, op) {
            ("time_nanos", _) => {
                let Some(v) = signed(value) else { return };
                match op {
                    Operator::Eq => self.bound_time(v, v),
                    Operator::GtEq => self.bound_time(v, i64::MAX),
                    Operator::Gt => self.bound_time(v.saturating_add(1), i64::MAX),
                    Operator::LtEq => self.bound_time(i64::MIN, v),
                    Operator::Lt => self.bound_time(i64::MIN, v.saturating_sub(1)),
                    _ => {}
                }
            }
            ("profile_type", Operator::Eq) => {
                if let Some(s) = string(value) {
                    // Two different equalities select nothing; keep the first, the filters
                    // above the scan still refuse every row.
                    self.profile_type.get_or_insert(s);
                }
            }
            ("service_name", Operator::Eq) => {
                if let Some(s) = string(value) {
                    self.services = Some(intersect(self.services.take(), vec![s]));
                }
            }
            ("series_fingerprint", Operator::Eq) => {
                if let Some(id) = unsigned(value) {
                    self.series = Some(intersect(self.series.take(), vec![id]));
                }
            }
            _ => {}
        }
    }

    fn bound_time(&mut self, start: i64, end: i64) {
        let r = self.range.get_or_insert(TimeRange::ALL);
        r.start = r.start.max(start);
        r.end = r.end.min(end);
    }
}

/// Values in both sets (the new set when there was none).
fn intersect<T: PartialEq>(current: Option<Vec<T>>, new: Vec<T>) -> Vec<T> {
    match current {
        None => new,
        Some(old) => old.into_iter().filter(|v| new.contains(v)).collect(),
    }
}

fn column_name(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(c) => Some(c.name.as_str()),
        // The scan schema has strings as views; literals compared to them may be cast.
        Expr::Cast(c) => column_name(&c.expr),
        _ => None,
    }
}

fn literal(expr: &Expr) -> Option<ScalarValue> {
    match expr {
        Expr::Literal(v, _) if !v.is_null() => Some(v.clone()),
        Expr::Cast(c) => literal(&c.expr),
        _ => None,
    }
}

fn string(v: &ScalarValue) -> Option<String> {
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Some(s.clone()),
        ScalarValue::Dictionary(_, inner) => string(inner),
        _ => None,
    }
}

fn signed(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::Int64(Some(x)) => Some(*x),
        ScalarValue::Int32(Some(x)) => Some(i64::from(*x)),
        ScalarValue::UInt64(Some(x)) => i64::try_from(*x).ok(),
        ScalarValue::UInt32(Some(x)) => Some(i64::from(*x)),
        _ => None,
    }
}

fn unsigned(v: &ScalarValue) -> Option<u64> {
    match v {
        ScalarValue::UInt64(Some(x)) => Some(*x),
        ScalarValue::UInt32(Some(x)) => Some(u64::from(*x)),
        ScalarValue::Int64(Some(x)) => u64::try_from(*x).ok(),
        ScalarValue::Int32(Some(x)) => u64::try_from(*x).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col, lit};

    use super::*;

    #[test]
    fn takes_what_the_filters_prove() {
        let filters = [
            col("time_nanos")
                .gt_eq(lit(10i64))
                .and(col("time_nanos").lt(lit(20i64))),
            col("profile_type").eq(lit("cpu")),
            col("service_name").in_list(vec![lit("a"), lit("b")], false),
            col("service_name").eq(lit("b")),
            lit(7u64).eq(col("series_fingerprint")),
            col("profile_id").eq(lit("x")),
            col("service_name").in_list(vec![lit("c")], true),
        ];
        let n = Narrowing::from_filters(&filters);
        assert_eq!(n.range, Some(TimeRange { start: 10, end: 19 }));
        assert_eq!(n.profile_type.as_deref(), Some("cpu"));
        assert_eq!(n.services, Some(vec!["b".to_owned()]));
        assert_eq!(n.series, Some(vec![7]));
        let between = Narrowing::from_filters(&[col("time_nanos").between(lit(1i64), lit(5i64))]);
        assert_eq!(between.range, Some(TimeRange { start: 1, end: 5 }));
        // A disjunction proves nothing about either side.
        let or = Narrowing::from_filters(&[col("service_name")
            .eq(lit("a"))
            .or(col("time_nanos").gt(lit(3i64)))]);
        assert_eq!(or, Narrowing::default());
    }
}
