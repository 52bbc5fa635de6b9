//! Tree shapes of 1,000 parameters each, shared by the core's cold-read tests
//! (`src/fs/tests/cold.rs`) and the benchmark's row 9, so that both measure the same trees.

/// Each shape's name, as the tests and the benchmark's table show it.
pub const SHAPES: [&str; 5] = [
    "ten directories of 100",
    "forty directories of 25, two levels deep",
    "deep and narrow: five chains ten levels deep, 20 files at each level",
    "wide and flat: one directory of 1,000",
    "many small directories: two hundred of 5, three levels deep",
];

/// The parameters of a shape, by path below the source, in the order they are created.
pub fn names(shape: &str) -> Vec<String> {
    match shape {
        s if s.starts_with("ten") => (0..10)
            .flat_map(|d| (0..100).map(move |f| format!("d{d}/f{f:03}")))
            .collect(),
        s if s.starts_with("forty") => (0..4)
            .flat_map(|t| {
                (0..10).flat_map(move |s| (0..25).map(move |f| format!("t{t}/s{s}/f{f:02}")))
            })
            .collect(),
        s if s.starts_with("deep") => (0..5)
            .flat_map(|c| {
                (1..=10).flat_map(move |depth| {
                    let dir: Vec<String> = (0..depth).map(|l| format!("c{c}l{l}")).collect();
                    let dir = dir.join("/");
                    (0..20).map(move |f| format!("{dir}/f{f:02}"))
                })
            })
            .collect(),
        s if s.starts_with("wide") => (0..1000).map(|f| format!("f{f:04}")).collect(),
        s if s.starts_with("many") => (0..5)
            .flat_map(|a| {
                (0..10).flat_map(move |b| {
                    (0..4).flat_map(move |c| (0..5).map(move |f| format!("a{a}/b{b}/c{c}/f{f}")))
                })
            })
            .collect(),
        _ => panic!("unknown shape {shape}"),
    }
}
