//! Conversion between R objects and core types. R validates user input
//! first (`R/`), so a malformed object here is a bug ([`internal`]); an
//! unknown choice is still reported as an input error naming the argument,
//! never replaced by a default.

pub mod configs;
pub mod counts;
pub mod results;

use crate::errors::{input, internal, GResult};
use extendr_api::prelude::*;
use std::collections::HashMap;

/// A named R list, read by name.
pub struct Args(HashMap<&'static str, Robj>);

impl Args {
    pub fn new(robj: &Robj, what: &str) -> GResult<Self> {
        let l: List = robj
            .clone()
            .try_into()
            .map_err(|_| internal(format!("`{what}` must be a list")))?;
        Ok(Args(l.iter().collect()))
    }
    /// `None` for a missing or `NULL` entry.
    pub fn get(&self, k: &str) -> Option<&Robj> {
        self.0.get(k).filter(|r| !r.is_null())
    }
    pub fn need(&self, k: &str) -> GResult<&Robj> {
        self.get(k)
            .ok_or_else(|| internal(format!("missing `{k}`")))
    }
    pub fn real(&self, k: &str) -> GResult<f64> {
        self.get(k)
            .and_then(number)
            .ok_or_else(|| internal(format!("`{k}` must be a number")))
    }
    pub fn real_or(&self, k: &str, d: f64) -> GResult<f64> {
        if self.get(k).is_some() {
            self.real(k)
        } else {
            Ok(d)
        }
    }
    pub fn count(&self, k: &str) -> GResult<usize> {
        let v = self.real(k)?;
        if v >= 0.0 && v.fract() == 0.0 {
            Ok(v as usize)
        } else {
            Err(input(k, format!("must be a whole number >= 0, not {v}")))
        }
    }
    pub fn count_or(&self, k: &str, d: usize) -> GResult<usize> {
        if self.get(k).is_some() {
            self.count(k)
        } else {
            Ok(d)
        }
    }
    pub fn opt_real(&self, k: &str) -> GResult<Option<f64>> {
        self.get(k).map(|_| self.real(k)).transpose()
    }
    pub fn boolean(&self, k: &str) -> GResult<bool> {
        self.get(k)
            .and_then(|r| r.as_bool())
            .ok_or_else(|| internal(format!("`{k}` must be TRUE or FALSE")))
    }
    pub fn boolean_or(&self, k: &str, d: bool) -> GResult<bool> {
        if self.get(k).is_some() {
            self.boolean(k)
        } else {
            Ok(d)
        }
    }
    pub fn string(&self, k: &str) -> GResult<String> {
        self.get(k)
            .and_then(|r| r.as_str())
            .map(|s| s.to_string())
            .ok_or_else(|| internal(format!("`{k}` must be a string")))
    }
    /// A numeric vector (empty when missing).
    pub fn reals(&self, k: &str) -> GResult<Vec<f64>> {
        reals(self.get(k), k)
    }
    pub fn opt_reals(&self, k: &str) -> GResult<Option<Vec<f64>>> {
        self.get(k).map(|_| self.reals(k)).transpose()
    }
}

/// A number from a double or integer scalar.
pub fn number(r: &Robj) -> Option<f64> {
    r.as_real().or_else(|| r.as_integer().map(|i| i as f64))
}

/// A numeric vector (double or integer; empty for `NULL`).
pub fn reals(r: Option<&Robj>, what: &str) -> GResult<Vec<f64>> {
    match r {
        None => Ok(Vec::new()),
        Some(v) if v.is_null() => Ok(Vec::new()),
        Some(v) => v
            .as_real_slice()
            .map(|s| s.to_vec())
            .or_else(|| {
                v.as_integer_slice()
                    .map(|s| s.iter().map(|&i| i as f64).collect())
            })
            .ok_or_else(|| internal(format!("`{what}` must be numeric"))),
    }
}

/// 0-based indices below `n` (`None`: all of `0..n`).
pub fn indices(robj: Option<&Robj>, n: usize, what: &str) -> GResult<Vec<usize>> {
    match robj {
        None => Ok((0..n).collect()),
        Some(r) => {
            let v = r
                .as_integer_slice()
                .ok_or_else(|| internal(format!("`{what}` indices must be integer")))?;
            v.iter()
                .map(|&i| {
                    if i >= 0 && (i as usize) < n {
                        Ok(i as usize)
                    } else {
                        Err(input(what, format!("index {} is out of range", i + 1)))
                    }
                })
                .collect()
        }
    }
}
