//! The generator's captions, pools, outlines and corners.

use super::*;

#[test]
fn captions_round_trip_and_hold_out_pairs() {
    let all = Attributes::all();
    assert_eq!(all.len(), 3 * 2 * 6 * 5);
    for a in &all {
        assert_eq!(Attributes::parse(&a.caption()), Some(*a));
    }
    let training = Attributes::training();
    assert_eq!(training.len(), all.len() - HELD_OUT.len() * 2 * 5);
    assert!(training.iter().all(|a| !a.held_out()));
    // Every colour and every shape is still seen in training.
    for c in Color::ALL {
        assert!(training.iter().any(|a| a.color == c));
    }
}

#[test]
fn the_outline_is_a_thin_band_around_the_shape() {
    let spec = Spec {
        attrs: Attributes::parse("a large red square on a blue background").unwrap(),
        radius: 10.0,
        center: (16.0, 16.0),
    };
    let outline = spec.outline();
    let cov = spec.coverage();
    // Half side 8.5 px: the square spans 7.5..24.5, so its edges cut pixels 7 and 24.
    assert_eq!(cov[16 * SIDE + 16], 1.0);
    assert_eq!(outline[16 * SIDE + 16], 0.0, "inside");
    assert_eq!(outline[2 * SIDE + 2], 0.0, "far outside");
    assert_eq!(outline[16 * SIDE + 7], 1.0, "on the left edge");
    assert_eq!(outline[16 * SIDE + 24], 1.0, "on the right edge");
    let band = outline.iter().filter(|&&v| v > 0.0).count();
    // Four sides of ~17 px, a band ~3 px wide.
    assert!((150..=250).contains(&band), "{band}");
}

#[test]
fn corners_mark_a_squares_corners_and_not_a_circle() {
    let at = |text: &str| Spec {
        attrs: Attributes::parse(text).unwrap(),
        radius: 10.0,
        center: (16.0, 16.0),
    };
    let square = at("a large red square on a blue background").corners();
    // The corners sit at 16 ± 8.5: pixel 7 (centre 7.5) is 0 px from the top-left one.
    assert_eq!(square[7 * SIDE + 7], 1.0);
    assert_eq!(square[24 * SIDE + 24], 1.0);
    assert_eq!(square[16 * SIDE + 16], 0.0, "the middle");
    assert_eq!(square[16 * SIDE + 7], 0.0, "the middle of an edge");
    let marked = square.iter().filter(|&&v| v > 0.0).count();
    // Four discs of radius 2 px: ~12 pixel centres each.
    assert!((32..=64).contains(&marked), "{marked}");
    let triangle = at("a large red triangle on a blue background").corners();
    // The apex is at (16, 6): the four pixels around it have their centres 0.71 px away.
    assert!(
        (triangle[6 * SIDE + 16] - (1.0 - 0.5f64.sqrt() / 2.0)).abs() < 1e-12,
        "the apex"
    );
    let circle = at("a large red circle on a blue background").corners();
    assert!(circle.iter().all(|&v| v == 0.0));
}

#[test]
fn a_square_share_sets_how_many_squares_are_drawn() {
    let squares = |share: Option<f64>| {
        let mut g = Generator::new(5).with_square_share(share);
        (0..3000)
            .filter(|_| {
                let (spec, _, _) = g.next_example();
                assert!(!spec.attrs.held_out());
                spec.attrs.shape == Shape::Square
            })
            .count()
    };
    assert_eq!(squares(Some(1.0)), 3000);
    assert_eq!(squares(Some(0.0)), 0);
    // A binomial's standard deviation here is ~27: five of them either side.
    let half = squares(Some(0.5));
    assert!((1365..=1635).contains(&half), "{half}");
    // Without a share, the training combinations' own proportion (50 of 140 are squares).
    let plain = squares(None);
    assert!((936..=1207).contains(&plain), "{plain}");
}

#[test]
fn a_new_colour_is_drawn_at_its_share_and_the_base_colours_otherwise() {
    let purple = Attributes::with_color(Color::Purple);
    // 3 shapes × 2 sizes × (6 shape colours on purple + purple on 6 backgrounds).
    assert_eq!(purple.len(), 3 * 2 * 12);
    assert!(
        purple
            .iter()
            .all(|a| (a.color == Color::Purple) != (a.background == Color::Purple))
    );
    for a in &purple {
        assert_eq!(Attributes::parse(&a.caption()), Some(*a));
    }
    assert!(Attributes::all().iter().all(|a| !purple.contains(a)));
    let mut g = Generator::new(3).with_new_color(Color::Purple, 0.75);
    let drawn = (0..2000)
        .filter(|_| {
            let (spec, _, _) = g.next_example();
            assert!(!spec.attrs.held_out());
            purple.contains(&spec.attrs)
        })
        .count();
    assert!((1440..=1560).contains(&drawn), "{drawn}");
    // 8 of the 72 pair a held-out (shape, colour) with the purple background.
    assert_eq!(purple.iter().filter(|a| a.held_out()).count(), 8);
}

#[test]
fn the_generator_is_deterministic_and_never_draws_held_out_pairs() {
    let mut a = Generator::new(7);
    let mut b = Generator::new(7);
    for _ in 0..200 {
        let (sa, ca, ia) = a.next_example();
        let (sb, cb, ib) = b.next_example();
        assert_eq!((sa, ca, ia.clone()), (sb, cb, ib));
        assert!(!sa.attrs.held_out());
        assert_eq!(ia.len(), SIDE * SIDE * 3);
    }
}
