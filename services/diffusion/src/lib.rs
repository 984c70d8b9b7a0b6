//! pixelfarm's diffusion engine on candle (work in progress, see issue 3).
