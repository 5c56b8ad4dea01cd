package dag

// LeafSource yields a file's leaves in file order. The layouts pull from it
// on the builder goroutine; Next must have emitted the leaf's block before
// it returns, so that every child reaches the sink before its parent.
type LeafSource interface {
	// More reports whether another leaf follows. It may block until the
	// next chunk has been read, and returns the read error if any.
	More() (bool, error)
	// Next returns the next leaf's link. It is only called after More
	// returned true.
	Next() (Link, error)
}

// Emit receives each internal node's block once it is complete. The block's
// Data is not retained by the caller after Emit returns.
type Emit func(Block) error

// depthRepeat is how many subtrees of each depth a trickle node holds after
// its direct leaves (boxo's trickle layout uses 4).
const depthRepeat = 4

// builder runs one layout over one file. It lives on one goroutine.
type builder struct {
	enc  Encoder
	src  LeafSource
	emit Emit
}

// BuildFile arranges a file's leaves into the layout p names, emitting every
// internal node (and, for an empty file, the one empty node) after its
// children, and returns the root's link. It runs on the caller's goroutine.
func BuildFile(enc Encoder, src LeafSource, emit Emit) (Link, error) {
	b := &builder{enc: enc, src: src, emit: emit}
	if enc.p.Layout == Trickle {
		// boxo's trickle root is always a dag-pb node, even when empty.
		return b.trickle(-1)
	}
	more, err := src.More()
	if err != nil {
		return Link{}, err
	}
	if !more {
		blk, l, err := enc.emptyFile()
		if err != nil {
			return Link{}, err
		}
		return l, emit(blk)
	}
	return b.balanced()
}

// commit encodes and emits an internal node.
func (b *builder) commit(children []Link) (Link, error) {
	blk, l, err := b.enc.node(unixfsFile, children)
	if err != nil {
		return Link{}, err
	}
	return l, b.emit(blk)
}

// balanced builds the tree boxo's balanced importer builds: the first leaf
// is the root of a one-leaf file; otherwise the root is replaced by a parent
// one level higher each time it fills up, and every new subtree is filled
// left to right, so all leaves sit at the same depth.
//
//	         root (depth 2)
//	        /            \
//	   node(174)        node(k<=174)
//	  / ... \           / ... \
//	leaf ... leaf     leaf ... leaf
func (b *builder) balanced() (Link, error) {
	more, err := b.src.More()
	if err != nil || !more {
		return Link{}, err // the caller handles the empty file
	}
	root, err := b.src.Next()
	if err != nil {
		return Link{}, err
	}
	for depth := 1; ; depth++ {
		if more, err = b.src.More(); err != nil || !more {
			return root, err
		}
		if root, err = b.fill([]Link{root}, depth); err != nil {
			return Link{}, err
		}
	}
}

// fill adds children of the given depth to a node that already holds
// children, until it has MaxLinks or the leaves run out, then commits it.
func (b *builder) fill(children []Link, depth int) (Link, error) {
	for len(children) < b.enc.p.MaxLinks {
		more, err := b.src.More()
		if err != nil {
			return Link{}, err
		}
		if !more {
			break
		}
		var child Link
		if depth == 1 {
			child, err = b.src.Next()
		} else {
			child, err = b.fill(nil, depth-1)
		}
		if err != nil {
			return Link{}, err
		}
		children = append(children, child)
	}
	return b.commit(children)
}

// trickle builds boxo's trickle layout: each node holds up to MaxLinks
// leaves, then depthRepeat subtrees of depth 1, depthRepeat of depth 2, and
// so on up to its own depth minus one; the root has no depth limit.
//
//	root: [leaf x174] [d1 x4] [d2 x4] [d3 x4] ...
//	d2:   [leaf x174] [d1 x4]
//	d1:   [leaf x174]
func (b *builder) trickle(maxDepth int) (Link, error) {
	var children []Link
	for len(children) < b.enc.p.MaxLinks {
		more, err := b.src.More()
		if err != nil {
			return Link{}, err
		}
		if !more {
			break
		}
		leaf, err := b.src.Next()
		if err != nil {
			return Link{}, err
		}
		children = append(children, leaf)
	}
	for depth := 1; maxDepth < 0 || depth < maxDepth; depth++ {
		more, err := b.src.More()
		if err != nil {
			return Link{}, err
		}
		if !more {
			break
		}
		for r := 0; r < depthRepeat; r++ {
			if more, err = b.src.More(); err != nil {
				return Link{}, err
			}
			if !more {
				break
			}
			child, err := b.trickle(depth)
			if err != nil {
				return Link{}, err
			}
			children = append(children, child)
		}
	}
	return b.commit(children)
}
