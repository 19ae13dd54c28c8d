-- Video sources through yt-dlp: what a submit asked for, and what yt-dlp said about the video.
-- `source` (existing) is the source that runs: planned at submit (direct, youtube, ytdlp) and
-- updated by the worker when a direct link turns out to be a web page handed to yt-dlp.

ALTER TABLE jobs
    ADD COLUMN requested_source text NOT NULL DEFAULT 'auto'
        CHECK (requested_source IN ('auto', 'direct', 'ytdlp')),
    ADD COLUMN format     text,        -- a yt-dlp format selector, validated by the API
    ADD COLUMN max_height integer CHECK (max_height BETWEEN 144 AND 4320),
    ADD COLUMN extractor  text,        -- yt-dlp's extractor (youtube, generic, ...), once known
    ADD COLUMN video_id   text,        -- the site's id of the video, once known
    ADD COLUMN title      text;        -- the video's title, once known (metadata only, never a key)
