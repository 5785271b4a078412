//! The read-only figures of the operator dashboard that no per-agent query gives: releases
//! and refusals of the attempt log counted per time bucket, in one query (the dashboard
//! draws them as a chart; a per-agent loop would cost one query per machine).

use super::db::args;
use super::{Store, StoreError};

/// Attempts of one time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptBucket {
    /// Unix seconds of the bucket's start (a multiple of the bucket width).
    pub start: i64,
    /// Attempts that released a half.
    pub released: u64,
    /// Attempts that were refused (and written to the log).
    pub refused: u64,
}

impl Store {
    /// Releases and refusals logged at or after `since`, per bucket of `width` seconds
    /// (buckets without attempts are absent), oldest first.
    pub fn attempt_histogram(
        &self,
        since: i64,
        width: i64,
    ) -> Result<Vec<AttemptBucket>, StoreError> {
        if width <= 0 {
            return Err(StoreError::Config(
                "histogram bucket width must be positive",
            ));
        }
        self.read(|c| {
            // CASTs: PostgreSQL's SUM of an integer is a bigint, its division of bigints is
            // integer division; both backends then hand back 64-bit integers.
            let rows = c.query(
                "SELECT CAST((at / ?2) * ?2 AS BIGINT) AS bucket,
                        CAST(SUM(CASE WHEN result = 'released' THEN 1 ELSE 0 END) AS BIGINT),
                        CAST(SUM(CASE WHEN result = 'released' THEN 0 ELSE 1 END) AS BIGINT)
                 FROM attempts WHERE at >= ?1 GROUP BY 1 ORDER BY 1",
                args![since, width],
            )?;
            rows.iter()
                .map(|row| {
                    Ok(AttemptBucket {
                        start: row.int(0, "attempts")?,
                        released: u64::try_from(row.int(1, "attempts")?).unwrap_or(0),
                        refused: u64::try_from(row.int(2, "attempts")?).unwrap_or(0),
                    })
                })
                .collect()
        })
    }
}
