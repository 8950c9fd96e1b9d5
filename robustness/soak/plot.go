package soak

import (
	"fmt"
	"image/color"
	"os"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Plot draws the proxy's goroutines, descriptors and RSS, and the
// exchanges per second, against time, one panel each, into a PNG at path.
// Dashed lines mark the end of the warm-up and of the load.
func Plot(samples []Sample, warmup time.Duration, path string) error {
	if len(samples) == 0 {
		return fmt.Errorf("plot: no samples")
	}
	last := samples[len(samples)-1].Elapsed
	minutes := last >= 10*time.Minute
	x := func(d time.Duration) float64 {
		if minutes {
			return d.Minutes()
		}
		return d.Seconds()
	}
	xlabel := "time since the load started (s)"
	if minutes {
		xlabel = "time since the load started (min)"
	}
	var loadEnd time.Duration
	for _, s := range samples {
		if s.Load {
			loadEnd = s.Elapsed
		}
	}
	panels := []struct {
		title string
		get   func(Sample) float64
		col   color.Color
	}{
		{"proxy goroutines", func(s Sample) float64 { return float64(s.Goroutines) }, color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}},
		{"proxy open descriptors", func(s Sample) float64 { return float64(s.FDs) }, color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}},
		{"proxy RSS (MiB)", func(s Sample) float64 { return float64(s.RSSKiB) / 1024 }, color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}},
		{"exchanges per second (all clients)", func(s Sample) float64 { return s.Rate }, color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}},
	}
	end := samples[len(samples)-1]
	rows := make([][]*plot.Plot, len(panels))
	for i, pn := range panels {
		p := plot.New()
		p.Title.Text = pn.title
		if i == 0 {
			p.Title.Text = fmt.Sprintf("sluice soak: %v of load against flapping upstreams, %d exchanges, %d injected failures, %d violations\n\n%s",
				loadEnd.Round(time.Second), end.Exchanges, end.Injected, end.Violations, pn.title)
		}
		p.Title.TextStyle.Font.Size = vg.Points(11)
		if i == len(panels)-1 {
			p.X.Label.Text = xlabel
		}
		p.Y.Min = 0
		pts := make(plotter.XYs, len(samples))
		top := 0.0
		for j, s := range samples {
			pts[j].X, pts[j].Y = x(s.Elapsed), pn.get(s)
			top = max(top, pts[j].Y)
		}
		p.Y.Max = top * 1.15
		if p.Y.Max == 0 {
			p.Y.Max = 1
		}
		p.Add(plotter.NewGrid())
		for _, at := range []time.Duration{warmup, loadEnd} {
			l, err := plotter.NewLine(plotter.XYs{{X: x(at), Y: 0}, {X: x(at), Y: p.Y.Max}})
			if err != nil {
				return err
			}
			l.Color = color.Gray{Y: 0x80}
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
			p.Add(l)
		}
		line, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		line.Color = pn.col
		line.Width = vg.Points(1.2)
		p.Add(line)
		rows[i] = []*plot.Plot{p}
	}
	img := vgimg.New(vg.Points(720), vg.Points(760))
	dc := draw.New(img)
	canvases := plot.Align(rows, draw.Tiles{Rows: len(rows), Cols: 1, PadX: vg.Millimeter, PadY: vg.Points(8),
		PadTop: vg.Points(6), PadBottom: vg.Points(6), PadLeft: vg.Points(6), PadRight: vg.Points(12)}, dc)
	for i := range rows {
		rows[i][0].Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
