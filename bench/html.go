package bench

import (
	_ "embed"
	"encoding/json"
	"html"
	"io"
	"text/template"
)

//go:embed report.html
var pageSource string

var page = template.Must(template.New("report").Parse(pageSource))

// WriteHTML writes the report as one self-contained HTML page: a
// throughput bar chart per phase, the latency percentile curves, the
// bench process's memory over time, and the table. The chart code is
// inlined (no network, no CDN); the data is the report's JSON, embedded.
// Every chart is a figure with a data-chart attribute, every series an
// SVG element with a data-series attribute naming its target, and the
// body's data-rendered attribute counts the charts drawn.
func (r *Report) WriteHTML(w io.Writer) error {
	r.Summarize()
	data, err := json.Marshal(r) // escapes <, > and &: safe inside <script>
	if err != nil {
		return err
	}
	title := r.Title
	if title == "" {
		title = "polybus bench"
	}
	return page.Execute(w, struct {
		Title string
		JSON  string
	}{html.EscapeString(title), string(data)})
}
