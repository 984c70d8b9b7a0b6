//! A render's size and its number of denoising steps.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use utoipa::ToSchema;

use super::deserialize::deserialize_via_parse;
use crate::{Error, Result};

/// Output size in pixels: each side a multiple of 8 between 8 and 4096, at most 16 Mpx.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct ImageSize {
    width: u32,
    height: u32,
}

impl ImageSize {
    /// Longest accepted side.
    pub const MAX_SIDE: u32 = 4096;

    /// # Errors
    /// `Invalid` naming the side that is out of range or not a multiple of 8.
    pub fn new(width: u32, height: u32) -> Result<Self> {
        for (name, v) in [("width", width), ("height", height)] {
            if !(8..=Self::MAX_SIDE).contains(&v) || v % 8 != 0 {
                return Err(Error::invalid(format!(
                    "{name} is {v}; accepted: a multiple of 8 between 8 and {}",
                    Self::MAX_SIDE
                )));
            }
        }
        Ok(ImageSize { width, height })
    }

    /// Width in pixels.
    pub fn width(self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(self) -> u32 {
        self.height
    }
}

impl fmt::Display for ImageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// Number of denoising steps, 1 to 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(transparent)]
pub struct StepCount(u32);

impl StepCount {
    /// Most steps accepted.
    pub const MAX: u32 = 200;

    /// # Errors
    /// `Invalid` outside 1..=200.
    pub fn parse(v: u32) -> Result<Self> {
        if !(1..=Self::MAX).contains(&v) {
            return Err(Error::invalid(format!(
                "is {v}; accepted: 1 to {}",
                Self::MAX
            )));
        }
        Ok(StepCount(v))
    }

    /// The step count.
    pub fn get(self) -> u32 {
        self.0
    }
}
deserialize_via_parse!(StepCount, u32);
