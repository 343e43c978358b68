package api

// DirEntry is one entry of a directory's listing (meshfs's addition).
// Type is "file", "dir" or "symlink"; Size is a file's bytes, a
// directory's entry count or a symlink's target length; Mode the
// permission bits the mount shows (0644, 0755 for executables and
// directories, 0777 for symlinks); CID the manifest CID of a file's or a
// directory's dataset; Target a symlink's target, as uploaded.
type DirEntry struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Size       uint64 `json:"size"`
	Mode       uint32 `json:"mode"`
	Executable bool   `json:"executable,omitempty"`
	CID        string `json:"cid,omitempty"`
	Target     string `json:"target,omitempty"`
}

// DirList is GET /data/{cid}/list's answer: the directory at Path under
// the tree CID, and its entries in order of name bytes. The server
// streams it, a page of the listing at a time.
type DirList struct {
	CID     string     `json:"cid"`
	Path    string     `json:"path"`
	DirCID  string     `json:"dirCid"`
	Entries []DirEntry `json:"entries"`
}
