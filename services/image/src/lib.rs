//! Image encoding and decoding: what a job's pixels become on the way out, and what an input
//! image from outside becomes on the way in. No renderer lives here, so the API checks uploads
//! without linking one.
//!
//! # Layout
//! - [`canny`]: [`canny::canny`], the Canny edge map of an image (OpenCV's `cv2.Canny`), a
//!   ControlNet control image.
//! - [`encode`]: [`encode_png`] with the AUTOMATIC1111 `parameters` text chunk and pixelfarm's own
//!   provenance chunk; [`a1111_parameters`] formats the former.
//! - [`output`]: the job's post-processing (resize/crop, colour, sharpen) and file format
//!   (PNG, JPEG, WebP); [`output::decode_rgb`] reads any of them back.
//! - [`credentials`]: content credentials, a signed C2PA manifest and the XMP digital source type
//!   embedded in an encoded image ([`credentials::embed`], [`ContentSigner`]).
//! - [`input`]: init images and masks from outside, checked from their header and decoded under
//!   limits ([`input::probe`], [`input::decode_input`]).
//! - `testing` (feature `testing`): PNGs for tests of those checks (plain, declaring a size,
//!   decompression bombs).
//! - `verify` (feature `testing`): content credentials read back with the `c2pa` crate.

pub mod canny;
pub mod credentials;
pub mod encode;
pub mod input;
pub mod output;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(any(test, feature = "testing"))]
pub mod verify;

pub use credentials::ContentSigner;
pub use encode::{PngMetadata, a1111_parameters, decode_png_text, encode_png};
