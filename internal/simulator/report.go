package simulator

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Actors of the timeline.
const (
	actorAtlassian = "atlassian"
	actorApp       = "app"
	actorWorker    = "worker"
	actorProduct   = "product"
	actorStorage   = "storage"
	actorSim       = "simulator"
	actorForge     = "forge"
	actorForgeJWKS = "forge jwks"
	actorForgeAPI  = "forge api"
)

// Event is one line of a scenario's timeline.
type Event struct {
	Scenario string `json:"scenario"`
	// Offset is the time since the scenario started.
	Offset time.Duration `json:"offsetMs"`
	From   string        `json:"from"`
	To     string        `json:"to"`
	What   string        `json:"what"`
	// Status is the HTTP status of the answer; 0 when there is none.
	Status int    `json:"status,omitempty"`
	Note   string `json:"note,omitempty"`
}

// MarshalJSON writes Offset in milliseconds.
func (e Event) MarshalJSON() ([]byte, error) {
	type plain Event
	p := plain(e)
	p.Offset = e.Offset / time.Millisecond
	return json.Marshal(struct {
		Type string `json:"type"`
		plain
	}{"event", p})
}

// Check is one expectation of a scenario.
type Check struct {
	Name     string `json:"name"`
	OK       bool   `json:"ok"`
	Expected string `json:"expected"`
	Seen     string `json:"seen"`
}

// Result is the outcome of one scenario.
type Result struct {
	Scenario string        `json:"scenario"`
	Pass     bool          `json:"pass"`
	Reason   string        `json:"reason"`
	Checks   []Check       `json:"checks"`
	Duration time.Duration `json:"durationMs"`
}

// Summary is the outcome of a run.
type Summary struct {
	Passed, Failed int
	Results        []Result
}

// Printer writes the timeline, the results and the summary, as text or as
// JSON lines. It is safe for concurrent use.
type Printer struct {
	mu   sync.Mutex
	w    io.Writer
	json bool
}

// NewPrinter writes to w; asJSON selects JSON lines.
func NewPrinter(w io.Writer, asJSON bool) *Printer { return &Printer{w: w, json: asJSON} }

func (p *Printer) event(e Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.json {
		b, _ := json.Marshal(e)
		fmt.Fprintf(p.w, "%s\n", b)
		return
	}
	status := ""
	if e.Status != 0 {
		status = fmt.Sprintf("  -> %d", e.Status)
	}
	who := e.From + " -> " + e.To
	if e.From == e.To {
		who = e.From
	}
	line := fmt.Sprintf("  %7.3fs  %-21s %s%s", e.Offset.Seconds(), who, e.What, status)
	if e.Note != "" {
		line += "  " + e.Note
	}
	fmt.Fprintln(p.w, line)
}

func (p *Printer) start(name, about string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.json {
		b, _ := json.Marshal(map[string]string{"type": "scenario", "scenario": name, "about": about})
		fmt.Fprintf(p.w, "%s\n", b)
		return
	}
	fmt.Fprintf(p.w, "\n== %s: %s\n", name, about)
}

func (p *Printer) check(scenario string, c Check) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.json {
		b, _ := json.Marshal(struct {
			Type     string `json:"type"`
			Scenario string `json:"scenario"`
			Check
		}{"check", scenario, c})
		fmt.Fprintf(p.w, "%s\n", b)
		return
	}
	mark := "ok  "
	if !c.OK {
		mark = "FAIL"
	}
	line := fmt.Sprintf("  check %s %s", mark, c.Name)
	if !c.OK {
		line += fmt.Sprintf(": expected %s, seen %s", c.Expected, c.Seen)
	}
	fmt.Fprintln(p.w, line)
}

func (p *Printer) result(r Result) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.json {
		type plain Result
		q := plain(r)
		q.Duration = r.Duration / time.Millisecond
		b, _ := json.Marshal(struct {
			Type string `json:"type"`
			plain
		}{"result", q})
		fmt.Fprintf(p.w, "%s\n", b)
		return
	}
	verdict := "PASS"
	if !r.Pass {
		verdict = "FAIL"
	}
	fmt.Fprintf(p.w, "%s %s (%.1fs): %s\n", verdict, r.Scenario, r.Duration.Seconds(), r.Reason)
}

// Summary prints the last line: "N passed, M failed".
func (p *Printer) Summary(s Summary) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.json {
		b, _ := json.Marshal(map[string]any{"type": "summary", "passed": s.Passed, "failed": s.Failed})
		fmt.Fprintf(p.w, "%s\n", b)
		return
	}
	fmt.Fprintf(p.w, "\n%d passed, %d failed\n", s.Passed, s.Failed)
}

// Message prints a line outside any scenario (errors, the run's header).
func (p *Printer) Message(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	msg := fmt.Sprintf(format, args...)
	if p.json {
		b, _ := json.Marshal(map[string]string{"type": "message", "message": msg})
		fmt.Fprintf(p.w, "%s\n", b)
		return
	}
	fmt.Fprintln(p.w, msg)
}

// timeline is the scenario running now: its clock and its checks.
type timeline struct {
	name   string
	start  time.Time
	p      *Printer
	mu     sync.Mutex
	checks []Check
}

// event adds a line to the running scenario's timeline (dropped when none runs).
func (s *Simulator) event(from, to, what string, status int, note string) {
	s.mu.Lock()
	tl := s.tl
	s.mu.Unlock()
	if tl == nil {
		return
	}
	tl.p.event(Event{Scenario: tl.name, Offset: time.Since(tl.start), From: from, To: to, What: what, Status: status, Note: note})
}

// expect records a check of the running scenario.
func (tl *timeline) expect(name string, ok bool, expected, seen string) bool {
	c := Check{Name: name, OK: ok, Expected: expected, Seen: seen}
	tl.mu.Lock()
	tl.checks = append(tl.checks, c)
	tl.mu.Unlock()
	tl.p.check(tl.name, c)
	return ok
}

// result turns the checks into the scenario's verdict: the first failed
// check is the reason.
func (tl *timeline) result() Result {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	r := Result{Scenario: tl.name, Pass: true, Checks: append([]Check(nil), tl.checks...), Duration: time.Since(tl.start)}
	var failed []string
	for _, c := range tl.checks {
		if !c.OK {
			r.Pass = false
			failed = append(failed, fmt.Sprintf("%s: expected %s, seen %s", c.Name, c.Expected, c.Seen))
		}
	}
	switch {
	case len(tl.checks) == 0:
		r.Pass, r.Reason = false, "no check ran"
	case r.Pass:
		r.Reason = fmt.Sprintf("%d checks passed", len(tl.checks))
	default:
		r.Reason = failed[0]
		if len(failed) > 1 {
			r.Reason += fmt.Sprintf(" (and %d more failed checks)", len(failed)-1)
		}
	}
	return r
}

// plural is "1 call", "2 calls".
func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// list renders a list of strings for a reason.
func list(items []string) string {
	if len(items) == 0 {
		return "none"
	}
	return strings.Join(items, ", ")
}
