package bench

import "slices"

// Summary is the spread of a few measurements of one path.
type Summary struct {
	Median, Min, Max float64
	N                int
}

// Summarize returns the median, minimum and maximum of xs; the zero
// Summary for none. The median of an even count is the mean of the two
// middle values.
func Summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return Summary{Median: median(s), Min: s[0], Max: s[len(s)-1], N: len(s)}
}

// Median returns the median of xs, 0 for none.
func Median(xs []float64) float64 { return Summarize(xs).Median }

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}
