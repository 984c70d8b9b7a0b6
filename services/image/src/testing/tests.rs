use super::*;

#[test]
fn a_small_bomb_decodes_to_its_declared_black_pixels() {
    let bytes = png_bomb(300);
    let img = crate::output::decode_rgb(&bytes).unwrap();
    assert_eq!((img.width, img.height), (300, 300));
    assert!(img.rgb.iter().all(|&b| b == 0));
    assert!(bytes.len() * 100 < img.rgb.len(), "{} bytes", bytes.len());
}

#[test]
fn a_declared_size_is_read_from_the_header() {
    let bytes = png_declaring(13_000, 13_000);
    assert!(bytes.len() < 1024, "{} bytes", bytes.len());
    let info = crate::input::probe(&png(8, 4, |_, _| [1, 2, 3])).unwrap();
    assert_eq!((info.width, info.height), (8, 4));
    assert!(crate::input::probe(&bytes).is_err());
}
