package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
)

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// plotColors gives each transport a fixed color.
var plotColors = map[string]string{
	tcpEcho: "#888888", grpcEcho: "#1f77b4", httpPool: "#ff7f0e", httpOne: "#d62728", kitEcho: "#2ca02c",
	kitNoLog: "#9467bd", kitNoTrace: "#8c564b", kitSyncLog: "#e377c2", kitNoWorkers: "#7f7f7f", kitNoAuthn: "#bcbd22",
}

// writePlot draws throughput against concurrency, one line per transport
// and one panel per payload size, from the run's transport cells, as SVG.
func writePlot(r *Results, path string) error {
	var sizes []string
	for _, c := range r.Cells {
		if c.Scenario == "transport" && !slices.Contains(sizes, c.Payload) {
			sizes = append(sizes, c.Payload)
		}
	}
	if len(sizes) == 0 {
		return nil
	}
	const pw, ph, ml, mr, mt, mb = 420.0, 300.0, 70.0, 20.0, 40.0, 50.0
	width := float64(len(sizes))*(pw+ml+mr) + 140
	height := ph + mt + mb
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	for i, size := range sizes {
		x0 := float64(i)*(pw+ml+mr) + ml
		var concs []int
		maxRPS := 0.0
		for _, c := range r.Cells {
			if c.Scenario == "transport" && c.Payload == size {
				if !slices.Contains(concs, c.Conc) {
					concs = append(concs, c.Conc)
				}
				maxRPS = math.Max(maxRPS, c.Summary.RPS)
			}
		}
		slices.Sort(concs)
		if maxRPS == 0 || len(concs) == 0 {
			continue
		}
		top := niceCeil(maxRPS)
		xOf := func(conc int) float64 {
			if len(concs) == 1 {
				return x0 + pw/2
			}
			return x0 + float64(slices.Index(concs, conc))/float64(len(concs)-1)*pw
		}
		yOf := func(v float64) float64 { return mt + ph - v/top*ph }
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle" font-size="14">echo, %s payload: requests/s by concurrency</text>`+"\n", x0+pw/2, mt-15, size)
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`+"\n", x0, mt+ph, x0+pw, mt+ph)
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`+"\n", x0, mt, x0, mt+ph)
		for k := 0; k <= 4; k++ {
			v := top * float64(k) / 4
			y := yOf(v)
			fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/>`+"\n", x0, y, x0+pw, y)
			fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%.0f</text>`+"\n", x0-5, y+4, v)
		}
		for _, conc := range concs {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">C=%d</text>`+"\n", xOf(conc), mt+ph+18, conc)
		}
		for _, t := range knownTransports {
			var pts []string
			for _, conc := range concs {
				c := r.find("transport", t, "", size, conc)
				if c == nil {
					continue
				}
				x, y := xOf(conc), yOf(c.Summary.RPS)
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", x, y, plotColors[t])
			}
			if len(pts) > 1 {
				fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), plotColors[t])
			}
		}
	}
	lx := float64(len(sizes))*(pw+ml+mr) + 10
	var shown []string
	for _, t := range knownTransports {
		for _, c := range r.Cells {
			if c.Scenario == "transport" && c.Name == t {
				shown = append(shown, t)
				break
			}
		}
	}
	for i, t := range shown {
		y := mt + 20 + float64(i)*20
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="12" height="12" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`+"\n", lx, y-10, plotColors[t], lx+18, y, t)
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="#555">%s, %d CPUs, %s</text>`+"\n", ml, height-10, r.Date.Format("2006-01-02"), r.Machine.CPUs, r.Machine.GoVersion)
	b.WriteString("</svg>\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}
