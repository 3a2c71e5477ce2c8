package bench_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/polybus/polybus/bench"
)

// chromium finds Debian's headless browser; without it the test skips,
// and fails under CI (which installs it).
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed (apt-get install chromium)")
	}
	t.Skip("chromium is not installed")
	return ""
}

// TestHTMLRendersInChromium runs two targets on mem:// (two rounds
// each), writes the HTML report, opens it in headless Chromium with no
// network and checks the drawn DOM: five charts, each target's series in
// every one, the table rows. It keeps a screenshot where
// POLYBUS_BENCH_SCREENSHOT says (BENCHMARKS.md's image comes from it).
func TestHTMLRendersInChromium(t *testing.T) {
	browser := chromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w := bench.Workload{Messages: 3000, Size: 128, Publishers: 4, Consumers: 2, Keys: 16, Rate: 3000, SteadyMessages: 1500}
	rep := bench.NewReport("polybus bench: render test", w)
	targets := map[string]bench.PolybusOptions{"mem:// bare": {}, "mem:// DefaultChain": {Chain: true}}
	for round := 1; round <= 2; round++ {
		for _, name := range []string{"mem:// bare", "mem:// DefaultChain"} {
			c, err := bench.Polybus(ctx, "mem://", targets[name])
			if err != nil {
				t.Fatal(err)
			}
			res, err := bench.Run(ctx, name, c, w, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := range res {
				res[i].Round = round
			}
			rep.Add(res...)
			if err := c.Close(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	dir := t.TempDir()
	page := filepath.Join(dir, "report.html")
	f, err := os.Create(page)
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteHTML(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(page)
	if regexp.MustCompile(`(?i)(src|href)=["']?https?:`).Match(raw) {
		t.Fatal("the page loads something from the network")
	}

	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--user-data-dir=" + filepath.Join(dir, "profile"), "--proxy-server=127.0.0.1:9", "--virtual-time-budget=5000"}
	dom, err := exec.CommandContext(ctx, browser, append(args, "--dump-dom", "file://"+page)...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	html := string(dom)
	if !strings.Contains(html, `data-rendered="5"`) {
		t.Fatalf("want 5 charts rendered; body: %.400s", html[strings.Index(html, "<body"):])
	}
	for _, chart := range []string{"throughput-publish", "throughput-consume", "throughput-steady", "latency", "memory"} {
		i := strings.Index(html, `data-chart="`+chart+`"`)
		if i < 0 {
			t.Fatalf("chart %s missing", chart)
		}
		fig := html[i:]
		fig = fig[:strings.Index(fig, "</figure>")]
		for _, series := range []string{"mem:// bare", "mem:// DefaultChain"} {
			if n := strings.Count(fig, `data-series="`+series+`"`); n != 1 {
				t.Errorf("chart %s: series %q drawn %d times, want 1", chart, series, n)
			}
		}
	}
	for _, series := range []string{"mem:// bare", "mem:// DefaultChain"} {
		// One table row per phase.
		if n := strings.Count(html, `<tr data-series="`+series+`"`); n != 3 {
			t.Errorf("table: %d rows for %q, want 3", n, series)
		}
	}
	shot := os.Getenv("POLYBUS_BENCH_SCREENSHOT")
	if shot == "" {
		shot = filepath.Join(dir, "report.png")
	}
	if err := exec.CommandContext(ctx, browser, append(args, "--hide-scrollbars", "--window-size=1100,1900", "--screenshot="+shot, "file://"+page)...).Run(); err != nil {
		t.Fatalf("chromium --screenshot: %v", err)
	}
	if st, err := os.Stat(shot); err != nil || st.Size() < 10_000 {
		t.Fatalf("screenshot %s: %v (%d bytes)", shot, err, st.Size())
	}
}
