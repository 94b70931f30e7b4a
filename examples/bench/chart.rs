//! The bench's picture: a horizontal bar chart of each measurement's percentage of the same
//! run's device-copy bandwidth, grouped by shape, drawn with plotters' SVG backend.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// One bar: a kernel at a shape.
pub struct Bar {
    pub kernel: String,
    pub shape: String,
    pub pct_copy: f64,
}

/// What the chart shows.
pub struct Chart {
    /// Names the adapter and the date.
    pub title: String,
    /// The adapter is a CPU emulating a GPU (lavapipe / llvmpipe and the like).
    pub cpu: bool,
    /// The copy bandwidth every bar is a percentage of.
    pub copy_gbps: f64,
    /// How the times were taken.
    pub clock: &'static str,
    pub reps: usize,
    pub quick: bool,
    /// In table order; consecutive bars of one shape form a group.
    pub bars: Vec<Bar>,
}

const WIDTH: u32 = 1100;
const BAR_PX: u32 = 16;
const GROUP_GAP: f64 = 0.7;
const TOP_PX: u32 = 118;
const X_AXIS_PX: u32 = 56;
const LEFT_PX: u32 = 300;

/// The bar's colour, by kernel family.
fn colour(kernel: &str) -> RGBColor {
    match kernel {
        k if k.contains("fill") => RGBColor(120, 120, 120),
        "forward soft" => RGBColor(31, 119, 180),
        "forward hard" => RGBColor(84, 160, 214),
        "forward log" => RGBColor(140, 196, 235),
        "backward from y" => RGBColor(230, 126, 34),
        "backward recompute" => RGBColor(243, 170, 90),
        k if k.starts_with("forward+backward") => RGBColor(192, 57, 43),
        "sample (Gumbel-max)" => RGBColor(39, 150, 80),
        k if k.starts_with("sample top") => RGBColor(120, 200, 120),
        // Token sampling and anything new.
        _ => RGBColor(142, 68, 173),
    }
}

/// Writes the chart to `path` as SVG.
pub fn write_svg(path: &Path, chart: &Chart) -> Result<(), Box<dyn std::error::Error>> {
    // Vertical position of each bar (in bar heights, from the top) with a gap between shapes.
    let mut y = Vec::with_capacity(chart.bars.len());
    let mut at = 0.0;
    for (i, bar) in chart.bars.iter().enumerate() {
        if i > 0 && chart.bars[i - 1].shape != bar.shape {
            at += GROUP_GAP;
        }
        y.push(at + 0.5);
        at += 1.0;
    }
    let rows = at.max(1.0);
    let height = TOP_PX + X_AXIS_PX + 20 + (rows * f64::from(BAR_PX)).ceil() as u32;
    let max_pct = chart.bars.iter().map(|b| b.pct_copy).fold(0.0, f64::max);
    // 0 to at least the copy itself, so every bar reads against the roofline.
    let x_max = (max_pct.max(100.0) * 1.12 / 10.0).ceil() * 10.0;

    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let text = |size: f64| ("sans-serif", size).into_font();
    root.draw(&Text::new(
        chart.title.clone(),
        (16, 14),
        text(20.0).style(FontStyle::Bold),
    ))?;
    let how = format!(
        "Percent of this run's device-to-device copy bandwidth ({:.1} GB/s, read + write), bytes \
         counted as in BENCHMARKS.md: fills 4 B/element,",
        chart.copy_gbps
    );
    root.draw(&Text::new(how, (16, 44), text(13.0)))?;
    let how2 = format!(
        "forward 8, backward 12, forward + backward 20, sampling 4 (top-k too). Median of {} \
         repetitions, {}{}.",
        chart.reps,
        chart.clock,
        if chart.quick {
            "; --quick: 1/16 of the rows at shapes of 16 rows or more"
        } else {
            ""
        }
    );
    root.draw(&Text::new(how2, (16, 62), text(13.0)))?;
    if chart.cpu {
        root.draw(&Text::new(
            "A CPU emulating a GPU (lavapipe / llvmpipe or the like), not GPU speed: \
             the figures show the bench runs, not how fast the kernels are on a GPU.",
            (16, 84),
            text(13.0)
                .style(FontStyle::Bold)
                .color(&RGBColor(170, 20, 20)),
        ))?;
    }

    let (_, area) = root.split_vertically(TOP_PX);
    let mut plot = ChartBuilder::on(&area)
        .margin_right(40)
        .margin_bottom(10)
        .x_label_area_size(X_AXIS_PX)
        .y_label_area_size(LEFT_PX)
        .build_cartesian_2d(0.0..x_max, -rows..0.0)?;
    plot.configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_labels(12)
        .x_label_formatter(&|v| format!("{v:.0}%"))
        .x_desc("percent of device-copy bandwidth (higher is better; 100% = the copy)")
        .axis_desc_style(text(14.0))
        .label_style(text(12.0))
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()?;

    let half = 0.38;
    plot.draw_series(chart.bars.iter().zip(&y).map(|(bar, &y)| {
        Rectangle::new(
            [(0.0, -y + half), (bar.pct_copy.min(x_max), -y - half)],
            colour(&bar.kernel).filled(),
        )
    }))?;
    // The value at the end of each bar; the kernel name left of the axis; the shape once per
    // group, further left.
    let right = Pos::new(HPos::Right, VPos::Center);
    let left = Pos::new(HPos::Left, VPos::Center);
    plot.draw_series(chart.bars.iter().zip(&y).map(|(bar, &y)| {
        EmptyElement::at((bar.pct_copy.min(x_max), -y))
            + Text::new(
                format!("{:.1}%", bar.pct_copy),
                (4, 0),
                text(11.0).color(&BLACK).pos(left),
            )
    }))?;
    plot.draw_series(chart.bars.iter().zip(&y).map(|(bar, &y)| {
        EmptyElement::at((0.0, -y))
            + Text::new(
                bar.kernel.clone(),
                (-8, 0),
                text(12.0).color(&BLACK).pos(right),
            )
    }))?;
    let firsts = chart
        .bars
        .iter()
        .zip(&y)
        .enumerate()
        .filter(|(i, (bar, _))| *i == 0 || chart.bars[i - 1].shape != bar.shape);
    plot.draw_series(firsts.map(|(_, (bar, &y))| {
        EmptyElement::at((0.0, -y))
            + Text::new(
                bar.shape.clone(),
                (-(LEFT_PX as i32) + 8, 0),
                text(12.0).style(FontStyle::Bold).color(&BLACK).pos(left),
            )
    }))?;
    // The roofline.
    plot.draw_series(std::iter::once(PathElement::new(
        vec![(100.0, 0.0), (100.0, -rows)],
        RGBColor(60, 60, 60).stroke_width(2),
    )))?;
    plot.draw_series(std::iter::once(
        EmptyElement::at((100.0, 0.0))
            + Text::new("copy = 100%", (4, 8), text(12.0).color(&BLACK).pos(left)),
    ))?;
    root.present()?;
    Ok(())
}
