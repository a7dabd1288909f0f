package gpus

// Owners of a GPU process (the same words as package monitor's).
const (
	OwnerMLC     = "mlc"     // a process of an mlc container
	OwnerForeign = "foreign" // a process of a container the engine knows but mlc did not make
	OwnerHost    = "host"    // a process in no container the engine knows
)

// Attributed is one process on one device with who it belongs to.
type Attributed struct {
	Process
	GPU     int
	GPUUUID string
	// ContainerID is the engine container id the process was confirmed
	// against; "" for a host process.
	ContainerID string
	Owner       string // OwnerMLC, OwnerForeign or OwnerHost
}

// Attribute maps every process of s to its container. idsOf(pid) returns
// the candidate 64-hex container ids from /proc/PID/cgroup, in order; the
// first candidate the engine knows (known[id] is OwnerMLC or OwnerForeign)
// wins; none known makes the process a host process. idsOf is called once
// per pid, however many devices the pid is on; a nil idsOf makes every
// process a host process.
//
// byContainer holds the processes of mlc containers, keyed by container id;
// unattributed holds the rest (host and foreign), in device then process
// order. Every process of s is in exactly one of the two.
func Attribute(s Snapshot, idsOf func(pid int) []string, known map[string]string) (byContainer map[string][]Attributed, unattributed []Attributed) {
	byContainer = map[string][]Attributed{}
	type owner struct{ id, owner string }
	cache := map[int]owner{}
	ownerOf := func(pid int) owner {
		if o, ok := cache[pid]; ok {
			return o
		}
		o := owner{owner: OwnerHost}
		if idsOf != nil {
			for _, id := range idsOf(pid) {
				if k := known[id]; k == OwnerMLC || k == OwnerForeign {
					o = owner{id: id, owner: k}
					break
				}
			}
		}
		cache[pid] = o
		return o
	}
	for _, d := range s.Devices {
		for _, p := range d.Processes {
			o := ownerOf(p.PID)
			a := Attributed{Process: p, GPU: d.Index, GPUUUID: d.UUID, ContainerID: o.id, Owner: o.owner}
			if o.owner == OwnerMLC {
				byContainer[o.id] = append(byContainer[o.id], a)
			} else {
				unattributed = append(unattributed, a)
			}
		}
	}
	return byContainer, unattributed
}

// Sum totals processes: their memory, and their SM utilisation summed in
// percent of one device (200 = two devices busy), nil where no process has
// a figure.
func Sum(ps []Attributed) (memoryBytes uint64, smUtil *float64) {
	var u float64
	have := false
	for _, p := range ps {
		memoryBytes += p.MemoryBytes
		if p.SMUtil != nil {
			u += *p.SMUtil
			have = true
		}
	}
	if have {
		smUtil = &u
	}
	return memoryBytes, smUtil
}
