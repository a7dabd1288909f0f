package history

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"strconv"
	"text/tabwriter"

	units "github.com/docker/go-units"
)

// WriteTable writes r for people: a summary line, then a USER section and a
// GPU section. Hours have one decimal, shares are percent, "-" is unknown.
func (r Report) WriteTable(w io.Writer) error {
	const day = "2006-01-02 15:04"
	fmt.Fprintf(w, "Usage %s to %s: %d samples, %.1f hours sampled\n\n",
		r.Since.Format(day), r.Until.Format(day), r.Samples, r.SampledHours)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tCONTAINERS\tSAMPLES\tGPU-HOURS\tBUSY\tIDLE\tEFFICIENCY\tCPU-HOURS\tPEAK-MEMORY")
	for _, u := range r.Users {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%.1f\t%.1f\t%s\t%.1f\t%s\n",
			u.User, u.Containers, u.Samples, u.GPUHoursAllocated, u.GPUHoursBusy, u.GPUHoursIdle,
			percent(u.Efficiency, 100), u.CPUHours, units.HumanSize(float64(u.PeakMemoryBytes)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GPU\tUUID\tBUSY\tALLOCATED\tUNATTRIBUTED-HOURS")
	for _, g := range r.GPUs {
		alloc := g.AllocatedPercent
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%.1f\n",
			g.Index, g.UUID, percent(g.BusyPercent, 1), percent(&alloc, 1), g.UnattributedGPUHours)
	}
	return tw.Flush()
}

// percent shows *v x scale as a whole percentage, "-" for nil.
func percent(v *float64, scale float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", *v*scale)
}

// CSVHeader is the header row of WriteCSV. The kind column says which
// columns a row fills: "user" rows the user's, "gpu" rows the GPU's; the
// others are empty, and so are unknown figures (null in JSON). Efficiency is
// 0..1 and the shares 0..100, as in JSON.
var CSVHeader = []string{
	"kind", "user", "containers", "samples", "gpu_hours_allocated", "gpu_hours_busy", "gpu_hours_idle",
	"efficiency", "cpu_hours", "peak_memory_bytes",
	"gpu_index", "gpu_uuid", "busy_percent", "allocated_percent", "unattributed_gpu_hours",
}

// WriteCSV writes r as CSV: the header row, a row per user, a row per GPU.
func (r Report) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	cw.Write(CSVHeader)
	for _, u := range r.Users {
		cw.Write([]string{
			"user", u.User, strconv.Itoa(u.Containers), strconv.Itoa(u.Samples),
			num(u.GPUHoursAllocated), num(u.GPUHoursBusy), num(u.GPUHoursIdle), optNum(u.Efficiency),
			num(u.CPUHours), strconv.FormatUint(u.PeakMemoryBytes, 10),
			"", "", "", "", "",
		})
	}
	for _, g := range r.GPUs {
		cw.Write([]string{
			"gpu", "", "", "", "", "", "", "", "", "",
			strconv.Itoa(g.Index), g.UUID, optNum(g.BusyPercent), num(g.AllocatedPercent),
			num(g.UnattributedGPUHours),
		})
	}
	cw.Flush()
	return cw.Error()
}

// num writes v rounded to six decimals, without trailing zeros.
func num(v float64) string {
	return strconv.FormatFloat(math.Round(v*1e6)/1e6, 'f', -1, 64)
}

func optNum(v *float64) string {
	if v == nil {
		return ""
	}
	return num(*v)
}
