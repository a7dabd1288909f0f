package cleanup

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteTable prints the plan for people: one line per action (what, who/name,
// why, rule and its source, when), then what was left alone and why.
func (p Plan) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if p.HighDemand {
		fmt.Fprintln(tw, "high demand: idle timeouts are shortened")
	}
	if len(p.Actions) == 0 {
		fmt.Fprintln(tw, "nothing to do")
	} else {
		fmt.Fprintln(tw, "WHAT\tWHO/NAME\tWHY\tRULE (SOURCE)\tWHEN")
		for _, a := range p.Actions {
			what := a.Action
			if a.Action == KindWarn {
				what = fmt.Sprintf("warn %d%%", a.Level)
			}
			rule := a.Rule
			if a.Source != "" {
				rule += " (" + a.Source + ")"
			}
			when := "now"
			if a.Action == KindWarn && !a.StopAt.IsZero() {
				when = "stop at " + fmtTime(a.StopAt)
				if a.KeepAlive {
					when += " (keep-alive)"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", what, who(a.User, a.Name, a.ContainerID, a.ImageID), oneLine(a.Reason), rule, when)
		}
	}
	if len(p.Skipped) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "LEFT ALONE\tWHY")
		for _, s := range p.Skipped {
			fmt.Fprintf(tw, "%s\t%s\n", who(s.User, s.Name, s.ContainerID, s.ImageID), oneLine(s.Why))
		}
	}
	return tw.Flush()
}

func who(user, name, containerID, imageID string) string {
	switch {
	case name == "" && imageID != "":
		return shortID(imageID)
	case imageID != "":
		return name + " " + shortID(imageID)
	case user != "":
		return user + "/" + name
	case name != "":
		return name
	}
	return shortID(containerID)
}

// oneLine keeps a reason from breaking the table.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\t", " ")), " ")
}
