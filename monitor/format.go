package monitor

import (
	"context"
	"fmt"
	"io"
	"os/user"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	units "github.com/docker/go-units"
)

// TableOptions choose the columns of WriteTable.
type TableOptions struct {
	User bool // a USER column (everyone's containers)
	Disk bool // a DISK column
}

// WriteTable writes the containers of s as `docker stats` does, with the
// GPU columns and the disk use added. Unknown figures are "-".
func WriteTable(w io.Writer, s Sample, o TableOptions) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "NAME\tCPU %\tMEM USAGE / LIMIT\tMEM %\tPIDS\tNET I/O\tBLOCK I/O\tGPUS\tGPU %\tGPU MEM"
	if o.User {
		head = "USER\t" + head
	}
	if o.Disk {
		head += "\tDISK"
	}
	fmt.Fprintln(tw, head)
	for _, c := range s.Containers {
		row := []string{Printable(c.Name)}
		if o.User {
			row = append([]string{Printable(c.User)}, row...)
		}
		if c.InitPID <= 0 || c.Error != "" {
			state := c.State
			if c.Error != "" {
				state = "(" + c.Error + ")"
			}
			row = append(row, state, "-", "-", "-", "-", "-", gpuList(c.GPUs), "-", "-")
		} else {
			row = append(row,
				fmt.Sprintf("%.2f%%", c.CPUPercent),
				units.BytesSize(float64(c.MemoryBytes))+" / "+units.BytesSize(float64(c.MemoryLimitBytes)),
				fmt.Sprintf("%.2f%%", c.MemoryPercent),
				strconv.FormatUint(c.Pids, 10),
				decimal(c.NetRxBytes)+" / "+decimal(c.NetTxBytes),
				decimal(c.BlockReadBytes)+" / "+decimal(c.BlockWriteBytes),
				gpuList(c.GPUs), percent(c.GPUUtilPercent), binary(c.GPUMemoryBytes))
		}
		if o.Disk {
			d := "-"
			if c.DiskBytes != nil {
				d = decimal(uint64(*c.DiskBytes))
			}
			row = append(row, d)
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// WriteUnattributed lists the GPU processes that belong to no mlc
// container, flagged for an admin's eye; nothing when there are none.
func WriteUnattributed(w io.Writer, ps []GPUProcess) error {
	if len(ps) == 0 {
		return nil
	}
	fmt.Fprintf(w, "\n! %d GPU process(es) outside mlc containers:\n", len(ps))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GPU\tPID\tUSER\tOWNER\tGPU MEM\tGPU %\tCOMMAND\tCONTAINER")
	for _, p := range ps {
		ctr := "-"
		if p.ContainerID != "" {
			ctr = p.ContainerID[:min(12, len(p.ContainerID))]
		}
		mem := p.MemoryBytes
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", p.GPU, p.PID, userName(p.UID), p.Owner,
			binary(&mem), percent(p.UtilPercent), orDash(Printable(p.Command)), ctr)
	}
	return tw.Flush()
}

// Notes are what a table of s cannot show: why GPU figures are missing
// (no NVML), and which of the containers' GPUs are MIG devices, where NVML
// gives memory per process but no utilisation.
func Notes(s Sample) []string {
	var out []string
	if s.GPUNote != "" {
		out = append(out, "GPU % and GPU MEM unknown: "+s.GPUNote)
	}
	used := map[string]bool{}
	for _, c := range s.Containers {
		for _, u := range c.GPUUUIDs {
			used[u] = true
		}
	}
	var mig []string
	for _, g := range s.GPUs {
		if g.MIG && used[g.UUID] {
			mig = append(mig, strconv.Itoa(g.Index))
		}
	}
	if len(mig) > 0 {
		out = append(out, "GPU % unknown on GPU "+strings.Join(mig, ",")+": in MIG mode NVML gives memory per process but no utilisation")
	}
	return out
}

// SortTop orders containers as `mlc top` shows them: running first, then by
// GPU utilisation, GPU memory and CPU, highest first.
func SortTop(cs []ContainerStats) {
	val := func(p *float64) float64 {
		if p == nil {
			return -1
		}
		return *p
	}
	mem := func(p *uint64) uint64 {
		if p == nil {
			return 0
		}
		return *p
	}
	sort.SliceStable(cs, func(i, j int) bool {
		a, b := cs[i], cs[j]
		if (a.InitPID > 0) != (b.InitPID > 0) {
			return a.InitPID > 0
		}
		if val(a.GPUUtilPercent) != val(b.GPUUtilPercent) {
			return val(a.GPUUtilPercent) > val(b.GPUUtilPercent)
		}
		if mem(a.GPUMemoryBytes) != mem(b.GPUMemoryBytes) {
			return mem(a.GPUMemoryBytes) > mem(b.GPUMemoryBytes)
		}
		return a.CPUPercent > b.CPUPercent
	})
}

// CarryDisk copies the layer sizes of prev into s for the containers s did
// not measure (a watch measures layers only now and then).
func CarryDisk(prev, s *Sample) {
	by := map[string]ContainerStats{}
	for _, c := range prev.Containers {
		by[c.ID] = c
	}
	for i, c := range s.Containers {
		if p, ok := by[c.ID]; ok && c.DiskBytes == nil && c.DiskNote == "" {
			s.Containers[i].DiskBytes, s.Containers[i].DiskNote = p.DiskBytes, p.DiskNote
		}
	}
}

// Watch calls frame every interval until ctx ends, which is how a watch is
// meant to end (nil). On a terminal each frame replaces the last, as top
// does; otherwise frames follow each other with the time between them.
func Watch(ctx context.Context, w io.Writer, terminal bool, every time.Duration, frame func(io.Writer) error) error {
	for first := true; ; first = false {
		if ctx.Err() != nil {
			return nil
		}
		var b strings.Builder
		if err := frame(&b); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		var err error
		switch {
		case terminal:
			// Home, the frame, clear what the last frame left below it.
			_, err = fmt.Fprint(w, "\x1b[H\x1b[2J"+b.String())
		case !first:
			_, err = fmt.Fprint(w, "\n"+b.String())
		default:
			_, err = fmt.Fprint(w, b.String())
		}
		if err != nil {
			// Nobody reads any more (a closed pipe or terminal): stop
			// measuring, rather than sample for ever as root.
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}

func gpuList(ix []int) string {
	if len(ix) == 0 {
		return "-"
	}
	s := make([]string, len(ix))
	for i, x := range ix {
		s[i] = strconv.Itoa(x)
		if x < 0 {
			s[i] = "?"
		}
	}
	return strings.Join(s, ",")
}

func percent(p *float64) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", *p)
}

func binary(p *uint64) string {
	if p == nil {
		return "-"
	}
	return units.BytesSize(float64(*p))
}

func decimal(n uint64) string { return units.HumanSizeWithPrecision(float64(n), 3) }

// Printable is s with every character a terminal could act on (control
// characters, escape sequences, invalid UTF-8) replaced by "?": a process
// name is whatever its owner set (prctl PR_SET_NAME), and an admin's
// terminal must not run it.
func Printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, s)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// userName is the name of uid, or the number when it has none.
func userName(uid int) string {
	if uid < 0 {
		return "-"
	}
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}
