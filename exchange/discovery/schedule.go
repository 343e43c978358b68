package discovery

import "container/heap"

// schedule is a min-heap of the entries not in flight, by due time: the
// loop finds the next one due, and takes those due, without a look at
// every CID announced. A node holding many small datasets announces many
// CIDs, and every announcement that ends wakes the loop; a scan of all of
// them on each wake made N uploads cost O(N²).
type schedule []*entry

func (s schedule) Len() int           { return len(s) }
func (s schedule) Less(i, j int) bool { return s[i].due.Before(s[j].due) }
func (s schedule) Swap(i, j int) {
	s[i], s[j] = s[j], s[i]
	s[i].at, s[j].at = i, j
}

func (s *schedule) Push(x any) {
	e := x.(*entry)
	e.at = len(*s)
	*s = append(*s, e)
}

func (s *schedule) Pop() any {
	old := *s
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*s = old[:len(old)-1]
	e.at = -1
	return e
}

// add puts e on the schedule at its due time (again, if it is there).
func (s *schedule) add(e *entry) {
	if e.at >= 0 {
		heap.Fix(s, e.at)
		return
	}
	heap.Push(s, e)
}

// remove takes e off the schedule, if it is there.
func (s *schedule) remove(e *entry) {
	if e.at >= 0 {
		heap.Remove(s, e.at)
	}
}
